"""Publisher / publish() / publish_many() (streambridge/publisher.py) against fakeredis."""

from __future__ import annotations

import importlib

import fakeredis
import pytest

import streambridge
from streambridge.contract import ContractError, Event
from streambridge.publisher import Publisher, publish, publish_many
from streambridge.settings import ProducerSettings

publish_module = importlib.import_module("streambridge.publisher")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CommandLog:
    """Every command a client sends, directly or through its pipelines, as text lists."""

    def __init__(self, client, monkeypatch) -> None:
        self.commands: list[list[str]] = []
        self.pipelines = 0
        real_execute = client.execute_command
        real_pipeline = client.pipeline

        def execute_command(*args, **options):
            self.commands.append([_text(a) for a in args])
            return real_execute(*args, **options)

        def pipeline(*args, **kwargs):
            pipe = real_pipeline(*args, **kwargs)
            real_pipe_execute = pipe.execute
            self.pipelines += 1

            def execute(*a, **kw):
                self.commands.extend([_text(x) for x in cmd] for cmd, _ in pipe.command_stack)
                return real_pipe_execute(*a, **kw)

            pipe.execute = execute
            return pipe

        monkeypatch.setattr(client, "execute_command", execute_command)
        monkeypatch.setattr(client, "pipeline", pipeline)

    def named(self, name: str) -> list[list[str]]:
        return [c for c in self.commands if c[0].upper() == name]


@pytest.fixture
def publisher(fake):
    return Publisher(fake, ProducerSettings(redis_url="redis://unused.invalid:1/0", maxlen=50))


def test_publish_appends_the_contract_fields_and_returns_the_id(publisher, fake):
    stream_id = publisher.publish("message", {"text": "hi"}, room="user:alice")
    assert isinstance(stream_id, str)
    assert fake.xrange("events") == [
        (stream_id, {"channel": "message", "body": '{"text":"hi"}', "room": "user:alice"})
    ]


def test_publish_writes_namespace_only_when_not_default(publisher, fake):
    publisher.publish("m", 1, namespace="/chat")
    publisher.publish("m", 2)
    [(_, first), (_, second)] = fake.xrange("events")
    assert first == {"channel": "m", "body": "1", "namespace": "/chat"}
    assert second == {"channel": "m", "body": "2"}


def test_publish_uses_the_configured_stream(fake):
    settings = ProducerSettings(redis_url="redis://unused.invalid:1/0", stream="other")
    Publisher(fake, settings).publish("m", 1)
    assert fake.xlen("other") == 1
    assert not fake.exists("events")


def test_publish_trims_approximately_to_settings_maxlen(publisher, fake, monkeypatch):
    log = CommandLog(fake, monkeypatch)
    publisher.publish("m", 1)
    [xadd] = log.named("XADD")
    assert xadd[:5] == ["XADD", "events", "MAXLEN", "~", "50"]


def test_publish_many_trims_every_entry_approximately(publisher, fake, monkeypatch):
    log = CommandLog(fake, monkeypatch)
    publisher.publish_many([{"channel": "m", "body": i} for i in range(3)])
    xadds = log.named("XADD")
    assert len(xadds) == 3
    assert all(c[:5] == ["XADD", "events", "MAXLEN", "~", "50"] for c in xadds)


def test_trimming_keeps_the_stream_bounded(fake):
    # Approximate trimming removes whole nodes (100 entries by default), so the bound is loose.
    settings = ProducerSettings(redis_url="redis://unused.invalid:1/0", maxlen=10)
    publisher = Publisher(fake, settings)
    publisher.publish_many([{"channel": "m", "body": i} for i in range(1000)])
    assert 10 <= fake.xlen("events") < 1000


def test_publish_rejects_an_invalid_event_without_appending(publisher, fake):
    with pytest.raises(ContractError, match="channel"):
        publisher.publish("not valid", 1)
    with pytest.raises(ContractError, match="cannot be serialized"):
        publisher.publish("m", float("nan"))
    assert not fake.exists("events")


def test_publish_honours_max_body_bytes_from_settings(fake):
    settings = ProducerSettings(redis_url="redis://unused.invalid:1/0", max_body_bytes=10)
    publisher = Publisher(fake, settings)
    publisher.publish("m", "12345678")  # 10 bytes with quotes
    with pytest.raises(ContractError, match="limit of 10"):
        publisher.publish("m", "123456789")
    assert fake.xlen("events") == 1


def test_publish_many_returns_ids_in_order(publisher, fake):
    items = [{"channel": "m", "body": {"n": i}} for i in range(5)]
    ids = publisher.publish_many(items)
    entries = fake.xrange("events")
    assert ids == [i for i, _ in entries]
    assert [f["body"] for _, f in entries] == [f'{{"n":{i}}}' for i in range(5)]


def test_publish_many_keeps_order_across_pipeline_chunks(publisher, fake, monkeypatch):
    monkeypatch.setattr(publish_module, "PIPELINE_CHUNK", 2)
    log = CommandLog(fake, monkeypatch)
    ids = publisher.publish_many({"channel": "m", "body": i} for i in range(5))
    assert log.pipelines == 3  # 2 + 2 + 1
    entries = fake.xrange("events")
    assert ids == [i for i, _ in entries]
    assert [f["body"] for _, f in entries] == ["0", "1", "2", "3", "4"]


def test_publish_many_validates_everything_before_appending_anything(publisher, fake):
    items = [
        {"channel": "m", "body": 1},
        {"channel": "m", "body": 2},
        {"channel": "bad channel", "body": 3},
        {"channel": "m", "body": 4},
    ]
    with pytest.raises(ContractError) as info:
        publisher.publish_many(items)
    assert info.value.reason.startswith("item 2: channel:")
    assert not fake.exists("events")


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("just a string", "item 0: must be an object with channel and body"),
        (["m", 1], "item 0: must be an object with channel and body"),
        ({"channel": "m"}, "item 0: channel and body are required"),
        ({"body": 1}, "item 0: channel and body are required"),
        ({"channel": "m", "body": 1, "extra": 2}, "item 0: unknown field(s): extra"),
    ],
)
def test_publish_many_reports_malformed_items(publisher, fake, item, reason):
    with pytest.raises(ContractError) as info:
        publisher.publish_many([item])
    assert info.value.reason == reason
    assert not fake.exists("events")


def test_publish_many_accepts_room_and_namespace(publisher, fake):
    publisher.publish_many([{"channel": "m", "body": "x", "room": "user:bob", "namespace": "/n"}])
    [(_, fields)] = fake.xrange("events")
    assert fields == {"channel": "m", "body": '"x"', "room": "user:bob", "namespace": "/n"}


def test_publish_many_of_nothing_sends_nothing(publisher, fake, monkeypatch):
    log = CommandLog(fake, monkeypatch)
    assert publisher.publish_many([]) == []
    assert log.commands == []


def test_publish_events_appends_prevalidated_events(publisher, fake):
    events = [Event.build("a", 1), Event.build("b", 2, room="r")]
    ids = publisher.publish_events(events)
    assert [(i, f) for i, f in fake.xrange("events")] == [
        (ids[0], {"channel": "a", "body": "1"}),
        (ids[1], {"channel": "b", "body": "2", "room": "r"}),
    ]


def test_byte_replies_are_returned_as_text(producer_settings):
    raw = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=False)
    publisher = Publisher(raw, producer_settings)
    single = publisher.publish("m", 1)
    many = publisher.publish_many([{"channel": "m", "body": 2}])
    assert isinstance(single, str)
    assert all(isinstance(i, str) for i in many)
    assert [i.decode() for i, _ in raw.xrange("events")] == [single, *many]


def test_module_functions_use_the_given_publisher(publisher, fake):
    first = publish("m", 1, publisher=publisher)
    [second] = publish_many([{"channel": "m", "body": 2}], publisher=publisher)
    assert [i for i, _ in fake.xrange("events")] == [first, second]


def test_module_functions_share_one_default_publisher(fake, monkeypatch):
    made = []

    def fake_publisher():
        made.append(Publisher(fake, ProducerSettings(redis_url="redis://unused.invalid:1/0")))
        return made[-1]

    monkeypatch.setattr(publish_module, "_default", None)
    monkeypatch.setattr(publish_module, "Publisher", fake_publisher)
    publish("m", 1)
    publish_many([{"channel": "m", "body": 2}])
    assert len(made) == 1
    assert fake.xlen("events") == 2


def test_package_exports_the_producer_api():
    assert streambridge.publish is publish
    assert streambridge.publish_many is publish_many
    assert streambridge.Event is Event
    assert streambridge.ContractError is ContractError
