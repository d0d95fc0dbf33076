"""Catch-up planning over shards, against a real redis-server with histories written by
the bridge's own publish script (delivery itself is tested end to end elsewhere)."""

from __future__ import annotations

import types

import pytest
from streambridge.bridge.daemon import Bridge, _entries
from streambridge.webapp.ext.catchup import CatchUp, Client
from streambridge.webapp.ext.identity import Viewer

from streambridge import keys
from streambridge.contract import shard_for
from streambridge.ids import StreamId
from streambridge.settings import BridgeSettings, WebSettings

pytestmark = pytest.mark.integration

SHARDS = 3


def room_in(shard: int) -> str | None:
    """A room of alice's whose events are in ``shard`` (shard 0: the broadcast)."""
    if shard == 0:
        return None
    return next(f"team:{k}" for k in range(1000) if shard_for(f"team:{k}", SHARDS) == shard)


ALICE = Client("sid", "/", Viewer("alice", frozenset(room_in(i) for i in (1, 2))))


@pytest.fixture
def bridges(redis_server, redis_client):
    settings = BridgeSettings(redis_url=redis_server.url, shards=SHARDS, consumer="c")
    out = []
    for i, stream in enumerate(keys.shards("events", SHARDS)):
        bridge = Bridge(settings, client=redis_client, shard=i)
        bridge.ensure_group()
        redis_client.set(keys.epoch(stream), f"E{i}")
        out.append(bridge)
    return out


@pytest.fixture
def catchup(redis_client, bridges):
    settings = WebSettings(shards=SHARDS, secret_key="x" * 40)
    return CatchUp(redis_client, types.SimpleNamespace(), settings)


def add(bridges, redis_client, shard: int, n: int) -> list[str]:
    """Publish n events to alice's room of ``shard``; their positions."""
    s = bridges[shard].settings
    room = room_in(shard)
    fields = {"channel": "t"} if room is None else {"channel": "t", "room": room}
    for i in range(n):
        redis_client.xadd(s.stream, {**fields, "body": str(i)})
    bridges[shard].process(_entries(redis_client.xreadgroup(s.group, "c", {s.stream: ">"})))
    key = keys.history(s.stream, "/", room)
    return [position for position, _ in redis_client.xrange(key)][-n:]


def test_positions_read_per_shard_and_junk_is_ignored(catchup):
    assert catchup.positions(None) == [(None, None)] * 3
    assert catchup.positions({"last_id": "1-0", "epoch": "E0"})[0] == ("1-0", "E0")
    given = {
        "positions": {
            "2": {"last_id": "5-0", "epoch": "E2"},
            "7": {"last_id": "1-0"},  # no such shard
            "x": {"last_id": "1-0"},
            "1": "not an object",
            "²": {"last_id": "1-0"},  # a digit to str.isdigit, not to int()
        }
    }
    assert catchup.positions(given) == [(None, None), (None, None), ("5-0", "E2")]


def test_each_shard_is_replayed_from_its_own_position(catchup, bridges, redis_client):
    ids = [add(bridges, redis_client, i, 5) for i in range(SHARDS)]
    plans = catchup.plan_all(ALICE, [(ids[0][1], "E0"), (ids[1][4], "E1"), (None, None)])
    assert plans.recovered and plans.replays
    after = [StreamId.parse(ids[0][1]), StreamId.parse(ids[1][4]), None]
    assert [p.after for p in plans.shards] == after
    # Shard 0: 3 to replay; shard 1: nothing missed; shard 2: a fresh start at its end.
    assert [str(p) for p, _, _ in plans.shards[0].missed] == ids[0][2:]
    assert plans.shards[1].missed == ()
    assert plans.covered() == {0: StreamId.parse(ids[0][4]), 1: StreamId.parse(ids[1][4])}
    info = plans.info(3, {0: StreamId.parse(ids[0][4])})
    assert info["positions"]["2"] == {"last_id": ids[2][4], "epoch": "E2"}
    assert info["positions"]["0"]["last_id"] == ids[0][4]  # where the client is now


def test_a_gap_in_one_shard_means_no_replay_in_any(catchup, bridges, redis_client):
    ids = [add(bridges, redis_client, i, 5) for i in range(SHARDS)]
    stream = keys.shard("events", 1, SHARDS)
    redis_client.xtrim(keys.history(stream, "/", room_in(1)), maxlen=2, approximate=False)
    plans = catchup.plan_all(ALICE, [(ids[0][0], "E0"), (ids[1][0], "E1"), (ids[2][0], "E2")])
    assert not plans.recovered and not plans.replays
    assert plans.reason == "history of a room was trimmed"
    assert plans.covered() == {}
    # The client is told where each shard stands now: complete from there on.
    assert [v["last_id"] for v in plans.info(0, {})["positions"].values()] == [i[-1] for i in ids]


def test_an_epoch_of_another_shard_is_refused(catchup, bridges, redis_client):
    ids = add(bridges, redis_client, 0, 2)
    plans = catchup.plan_all(ALICE, [(ids[0], "E1"), (None, None), (None, None)])
    assert not plans.recovered and "epoch" in plans.reason


def test_positions_are_left_out_where_the_stream_could_not_be_read(catchup):
    info = catchup._unavailable().info(0, {})
    assert info["recovered"] is False and info["positions"] == {}


def test_a_last_id_without_an_epoch_is_refused_on_a_sharded_stream(catchup):
    positions = catchup.positions({"last_id": "1-0"})
    plans = catchup.plan_all(ALICE, positions)
    assert plans.recovered is False
    assert "send positions per shard" in plans.reason
