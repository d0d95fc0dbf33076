"""streambridge.js's presence view, driven in Node with a stand-in socket: changes
applied by number whatever order they arrive in, reads that cross, repeats."""

from __future__ import annotations

from tests.unit.client_harness import run_harness


def run(steps: list[list]) -> dict:
    return run_harness("client_presence_harness.js", steps)


def test_changes_numbered_before_the_read_are_ignored_and_early_ones_kept():
    result = run([
        ["watch"], ["connect"],
        ["change", "join", "bob", 90],  # before the read: in it (or not) already
        ["change", "join", "alice", 105],  # after the read, arrived before its answer
        ["answer", 0, 100, {"carol": 1, "bob": 1}],
    ])  # fmt: skip
    assert result["seen"] == [
        ["sync", None, "bob,carol"],
        ["join", "alice", "alice,bob,carol"],
    ]


def test_out_of_order_changes_of_one_user_end_in_the_later_one():
    result = run([
        ["watch"], ["connect"], ["answer", 0, 100, {"carol": 1}],
        ["change", "leave", "alice", 105],  # from one server
        ["change", "join", "alice", 104],  # the earlier join, from another, later
    ])  # fmt: skip
    assert result["seen"] == [["sync", None, "carol"]]  # alice: joined and left


def test_reads_that_cross_never_roll_the_view_back():
    result = run([
        ["watch"], ["connect"], ["stale"],  # two reads in flight
        ["answer", 0, 100, {"carol": 1}],
        ["change", "join", "alice", 102],
        ["answer", 1, 101, {"carol": 1}],  # read before alice joined, answered after
    ])  # fmt: skip
    assert result["seen"][-1] == ["join", "alice", "alice,carol"]
    assert [s[2] for s in result["seen"]][-2:] == ["carol", "alice,carol"]


def test_an_answer_older_than_the_view_changes_nothing():
    result = run([
        ["watch"], ["connect"], ["answer", 0, 100, {"carol": 1}],
        ["change", "join", "alice", 102],
        ["stale"], ["answer", 1, 101, {"carol": 1}],  # older than what the view has
    ])  # fmt: skip
    assert result["seen"] == [["sync", None, "carol"], ["join", "alice", "alice,carol"]]


def test_a_repeated_change_is_not_told_twice():
    result = run([
        ["watch"], ["connect"], ["answer", 0, 100, {"carol": 1}],
        ["change", "join", "alice", 101], ["change", "join", "alice", 103],
        ["change", "leave", "bob", 104],  # never present
    ])  # fmt: skip
    assert result["seen"] == [["sync", None, "carol"], ["join", "alice", "alice,carol"]]


def test_a_refused_watch_is_asked_again_once_the_room_is_subscribed():
    result = run([
        ["watch"], ["connect"], ["refuse", 0], ["subscribe"], ["subscribed"],
        ["answer", 1, 100, {"me": 1}],
    ])  # fmt: skip
    assert result["seen"] == [["refused", None, ""], ["sync", None, "me"]]
    assert result["asks"] == 2


def test_a_reconnect_reads_the_room_again_and_ignores_the_old_connections_answer():
    result = run([
        ["watch"], ["connect"], ["disconnect"], ["connect"],
        ["answer", 1, 200, {"carol": 1}],
        ["answer", 0, 100, {"carol": 1, "ghost": 1}],  # asked before the drop
    ])  # fmt: skip
    assert result["seen"] == [["sync", None, "carol"]]
