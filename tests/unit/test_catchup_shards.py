"""Catch-up planning over shard streams (fakeredis; delivery itself is tested for real
in tests/integration)."""

from __future__ import annotations

import types

import fakeredis
import pytest

from streambridge import keys
from streambridge.ids import StreamId
from streambridge.settings import WebSettings
from webapp.catchup import CatchUp

SHARDS = 3


@pytest.fixture
def fake():
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def catchup(fake):
    settings = WebSettings(shards=SHARDS, secret_key="x" * 40)
    for i, key in enumerate(keys.shards("events", SHARDS)):
        fake.set(keys.epoch(key), f"E{i}")
    return CatchUp(fake, types.SimpleNamespace(), settings)


def add(fake, shard: int, n: int) -> list[str]:
    key = keys.shard("events", shard, SHARDS)
    return [fake.xadd(key, {"channel": "t", "body": str(i)}) for i in range(n)]


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


def test_each_shard_is_replayed_from_its_own_position(catchup, fake):
    ids = [add(fake, i, 5) for i in range(SHARDS)]
    plans = catchup.plan_all([(ids[0][1], "E0"), (ids[1][4], "E1"), (None, None)])
    assert plans.recovered and plans.replays
    after = [StreamId.parse(ids[0][1]), StreamId.parse(ids[1][4]), None]
    assert [p.after for p in plans.shards] == after
    # Shard 0: 3 to replay; shard 1: nothing missed; shard 2: a fresh start at its end.
    assert plans.covered() == {0: StreamId.parse(ids[0][4]), 1: StreamId.parse(ids[1][4])}
    info = plans.info(3, {0: StreamId.parse(ids[0][4])})
    assert info["positions"]["2"] == {"last_id": ids[2][4], "epoch": "E2"}
    assert info["positions"]["0"]["last_id"] == ids[0][4]  # where the client is now


def test_a_gap_in_one_shard_means_no_replay_in_any(catchup, fake):
    ids = [add(fake, i, 5) for i in range(SHARDS)]
    fake.xtrim(keys.shard("events", 1, SHARDS), maxlen=2, approximate=False)
    plans = catchup.plan_all([(ids[0][0], "E0"), (ids[1][0], "E1"), (ids[2][0], "E2")])
    assert not plans.recovered and not plans.replays
    assert plans.reason == "history after last_id was trimmed"
    assert plans.covered() == {}
    # The client is told where each shard stands now: complete from there on.
    assert [v["last_id"] for v in plans.info(0, {})["positions"].values()] == [i[-1] for i in ids]


def test_an_epoch_of_another_shard_is_refused(catchup, fake):
    ids = add(fake, 0, 2)
    plans = catchup.plan_all([(ids[0], "E1"), (None, None), (None, None)])
    assert not plans.recovered and "epoch" in plans.reason


def test_positions_are_left_out_where_the_stream_could_not_be_read(catchup):
    info = catchup._unavailable().info(0, {})
    assert info["recovered"] is False and info["positions"] == {}


def test_a_last_id_without_an_epoch_is_refused_on_a_sharded_stream(catchup):
    positions = catchup.positions({"last_id": "1-0"})
    plans = catchup.plan_all(positions)
    assert plans.recovered is False
    assert "send positions per shard" in plans.reason
