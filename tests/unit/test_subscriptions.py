"""The parts of rooms on request that need no server: the rate limit and the time limit
on the app's hook (the requests themselves: tests/integration/test_subscriptions.py)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from streambridge.webapp.ext.identity import Viewer
from streambridge.webapp.ext.subscriptions import TokenBucket, with_time_limit


def test_a_bucket_gives_its_burst_then_its_rate(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one more at 2 per second
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] += 100  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def start_thread(fn):
    threading.Thread(target=fn, daemon=True).start()


def limited(hook, timeout_s=1.0):
    return with_time_limit(hook, timeout_s, start_thread, contextlib.nullcontext)


ALICE = Viewer("alice")


@pytest.mark.parametrize(
    ("answer", "allowed"), [(True, True), (False, False), (1, False), ("yes", False), (None, False)]
)
def test_only_true_is_yes(answer, allowed):
    assert limited(lambda user, room: answer)(ALICE, "team:a") is allowed


def test_the_hook_gets_the_user_id_and_the_room():
    seen = []
    limited(lambda user, room: seen.append((user, room)) or True)(ALICE, "team:a")
    assert seen == [("alice", "team:a")]


def test_an_exception_is_no():
    def hook(user, room):
        raise RuntimeError("database down")

    assert limited(hook)(ALICE, "team:a") is False


def test_a_hook_that_does_not_answer_in_time_is_no():
    release = threading.Event()

    def slow(user, room):
        release.wait(10)
        return True

    started = time.monotonic()
    assert limited(slow, timeout_s=0.2)(ALICE, "team:a") is False
    assert time.monotonic() - started < 5
    release.set()
