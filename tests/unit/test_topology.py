"""Redis URLs of every kind, shard keys and the shard of a room (no server needed)."""

from __future__ import annotations

import zlib

import fakeredis
import pytest
import redis
from pydantic import ValidationError
from socketio.redis_manager import parse_redis_sentinel_url

from streambridge import keys
from streambridge.contract import shard_for
from streambridge.publisher import Publisher
from streambridge.redis_conn import LazyCluster, connect, limiter_storage, parse
from streambridge.settings import BridgeSettings, ProducerSettings, WebSettings


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://localhost:6379/0", "single"),
        ("rediss://:pw@cache.example:6380/2", "single"),
        ("unix:///run/redis/redis.sock?db=1", "single"),
        ("redis+sentinel://s1:26379,s2:26379,s3/0/mymaster", "sentinel"),
        ("redis+cluster://n1:7000,n2:7001", "cluster"),
        ("rediss+cluster://user:pw@n1:7000", "cluster"),
    ],
)
def test_every_supported_url_kind(url, kind):
    assert parse(url).kind == kind


def test_sentinel_url_reads_as_python_socketio_reads_it():
    url = "redis+sentinel://user:p%40ss@s1:26379,s2:26380/3/mymaster"
    sentinels, service, options = parse_redis_sentinel_url(url)
    target = parse(url)
    assert target.hosts == sentinels
    assert target.service == service == "mymaster"
    assert target.db == options["db"] == 3
    assert target.username == "user" and target.password == "p@ss"


def test_sentinel_default_port_and_cluster_flag():
    assert parse("redis+sentinel://s1/0/m").hosts == [("s1", 26379)]
    target = parse("redis://:pw@10.0.0.5:7000/0", cluster=True)
    assert (target.kind, target.hosts, target.password) == ("cluster", [("10.0.0.5", 7000)], "pw")


@pytest.mark.parametrize(
    ("url", "cluster", "error"),
    [
        ("amqp://guest@localhost//", False, "unsupported Redis URL scheme"),
        ("redis+sentinel://s1:26379/0", False, "service name"),
        ("redis+sentinel://s1:26379/x/m", False, "database number"),
        ("redis+sentinel://:secret@s1:notaport/0/m", False, "bad host:port"),
        ("redis+cluster://n1:7000/3", False, "only database 0"),
        ("unix:///run/redis.sock", True, "unix"),
        ("redis+sentinel://s1/0/m", True, "Sentinels"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url, cluster, error):
    with pytest.raises(ValueError, match=error):
        parse(url, cluster=cluster)


def test_errors_never_show_the_password():
    with pytest.raises(ValueError) as caught:
        parse("redis+sentinel://:secret@s1:notaport/0/m")
    assert "secret" not in str(caught.value)


def test_settings_refuse_a_bad_url_at_start(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "amqp://localhost")
    with pytest.raises(ValidationError, match="unsupported Redis URL scheme"):
        BridgeSettings()
    monkeypatch.setenv("REDIS_URL", "unix:///tmp/r.sock")
    monkeypatch.setenv("STREAMBRIDGE_CLUSTER", "1")
    with pytest.raises(ValidationError, match="unix"):
        WebSettings()


def test_limiter_gets_the_same_redis_in_its_own_url_forms():
    assert limiter_storage("redis://h:1/0") == ("redis://h:1/0", {})
    assert limiter_storage("unix:///run/r.sock") == ("redis+unix:///run/r.sock", {})
    # Credentials and TLS as options (never in an error message); the Sentinels are asked
    # without the master's credentials, as streambridge's own clients ask them.
    uri, options = limiter_storage("redis+sentinel://u:pw@s1:1,s2:2/4/main")
    assert uri == "redis+sentinel://s1:1,s2:2/main"
    assert (options["username"], options["password"], options["db"]) == ("u", "pw", 4)
    assert options["sentinel_kwargs"]["password"] is None
    uri, options = limiter_storage("rediss://:pw@n1:7000?ssl_ca_certs=/ca.pem", cluster=True)
    assert uri == "redis+cluster://n1:7000"
    assert options == {"ssl": True, "password": "pw", "ssl_ca_certs": "/ca.pem"}


def test_a_cluster_client_is_made_on_first_use():
    # Nothing listens there: making the client must not fail, using it must, as an
    # ordinary connection error the daemons back off from.
    client = connect("redis+cluster://127.0.0.1:1", socket_connect_timeout=0.2)
    assert isinstance(client, LazyCluster)
    with pytest.raises(redis.ConnectionError, match="Redis Cluster unreachable"):
        client.ping()


def test_shard_keys_carry_hash_tags():
    assert keys.shards("events", 1) == ["events"]
    assert keys.shards("events", 3) == ["events:{0}", "events:{1}", "events:{2}"]
    # Everything of one shard shares its slot (dead letters, epoch, liveness keys).
    shard = keys.shard("events", 2, 3)
    assert keys.dead(shard).startswith("events:{2}")
    assert keys.epoch(shard).startswith("events:{2}")


@pytest.mark.parametrize("room", [None, "", "user:alice", "team:blue", "user:émile", "x" * 256])
def test_the_shard_of_a_room_is_crc32_of_its_bytes(room):
    for count in (1, 2, 3, 8, 1024):
        expected = zlib.crc32((room or "").encode()) % count
        assert shard_for(room, count) == expected
    assert shard_for(None, 5) == shard_for("", 5) == 0


def test_settings_for_one_shard():
    settings = BridgeSettings(shards=3, stream="ev")
    one = settings.for_shard(1)
    assert (one.stream, one.shards, one.dead_stream) == ("ev:{1}", 1, "ev:{1}:dead")
    assert settings.stream_keys == ["ev:{0}", "ev:{1}", "ev:{2}"]


def test_queue_pubsub_is_sharded_on_a_cluster_only_by_default():
    assert not WebSettings().sharded_pubsub
    assert WebSettings(cluster=True).sharded_pubsub
    assert WebSettings(redis_url="redis+cluster://n:7000").sharded_pubsub
    assert not WebSettings(cluster=True, queue_pubsub="classic").sharded_pubsub
    assert WebSettings(queue_pubsub="sharded").sharded_pubsub


def test_publisher_appends_each_event_to_the_shard_of_its_room():
    fake = fakeredis.FakeRedis(decode_responses=True)
    publisher = Publisher(fake, ProducerSettings(shards=4))
    rooms = ["user:alice", "user:bob", "team:blue", None, "team:1", "team:2"]
    for room in rooms:
        publisher.publish("m", {"room": room}, room=room)
    for room in rooms:
        key = keys.shard("events", shard_for(room, 4), 4)
        assert any(f.get("room") == room for _, f in fake.xrange(key)), (room, key)
    assert sum(fake.xlen(k) for k in keys.shards("events", 4)) == len(rooms)
    assert not fake.exists("events")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REDIS_URL": "redis+sentinel://:hunter2@s1:26379/0"}, "REDIS_URL: Value error, Sentinel"),
        ({"REDIS_URL": "amqp://u:hunter2@h/"}, "REDIS_URL: Value error, unsupported"),
        ({"STREAMBRIDGE_SHARDS": "0"}, "STREAMBRIDGE_SHARDS: Input should be greater"),
    ],
)
def test_the_cli_names_a_bad_setting_without_its_secret(env, expected, monkeypatch, capsys):
    from streambridge.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "hunter2" not in err and "Traceback" not in err


def test_query_options_apply_to_sentinel_and_cluster_urls():
    target = parse("rediss+sentinel://s1/0/m?ssl_ca_certs=/ca.pem&socket_timeout=3")
    assert target.options == {"ssl_ca_certs": "/ca.pem", "socket_timeout": 3.0}
    assert parse("redis+cluster://n1:7000?health_check_interval=5").options == {
        "health_check_interval": 5
    }
