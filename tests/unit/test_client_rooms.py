"""streambridge.js's rooms on request, driven in Node with a stand-in socket: what it
asks the server, in which order, and what it says it has joined."""

from __future__ import annotations

from tests.unit.client_harness import run_harness

OK = {"ok": True, "recovered": True, "replayed": 0}
BUSY = {"ok": False, "reason": "too many requests; slow down", "retry": True}


def run(steps: list[list]) -> dict:
    return run_harness("client_rooms_harness.js", steps)


def test_a_room_is_joined_once_the_server_says_so():
    before = run([["connect"], ["subscribe"]])
    assert (before["sent"], before["joined"]) == (["sub"], [])
    after = run([["connect"], ["subscribe"], ["answer", "sub", 0, OK]])
    assert after["joined"] == ["r"]
    assert after["answers"] == [["sub", True, None]]


def test_no_room_is_joined_while_disconnected_and_each_is_asked_again():
    result = run([["connect"], ["subscribe"], ["answer", "sub", 0, OK], ["disconnect"]])
    assert result["joined"] == []
    again = run([
        ["connect"], ["subscribe"], ["answer", "sub", 0, OK], ["disconnect"], ["connect"],
    ])  # fmt: skip
    assert (again["sent"], again["joined"]) == (["sub", "sub"], [])


def test_leaving_a_room_still_being_joined_waits_for_the_join_answer():
    """The server may answer the subscribe after an unsubscribe that overtook it, and
    then be in the room: the unsubscribe goes after that answer."""
    waiting = run([["connect"], ["subscribe"], ["unsubscribe"]])
    assert waiting["sent"] == ["sub"]
    assert waiting["answers"] == [["sub", False, "unsubscribed"]]
    sent = run([["connect"], ["subscribe"], ["unsubscribe"], ["answer", "sub", 0, OK]])
    assert sent["sent"] == ["sub", "unsub"]
    done = run([
        ["connect"], ["subscribe"], ["unsubscribe"], ["answer", "sub", 0, OK],
        ["answer", "unsub", 0, {"ok": True}],
    ])  # fmt: skip
    assert done["answers"][-1] == ["unsub", True, None]
    assert done["joined"] == []


def test_a_passing_refusal_of_a_leave_is_asked_again():
    result = run([
        ["connect"], ["subscribe"], ["answer", "sub", 0, OK], ["unsubscribe"],
        ["answer", "unsub", 0, BUSY], ["timers"], ["answer", "unsub", 1, {"ok": True}],
    ])  # fmt: skip
    assert result["sent"] == ["sub", "unsub", "unsub"]
    assert result["answers"] == [["sub", True, None], ["unsub", True, None]]


def test_a_final_refusal_of_a_leave_is_told():
    result = run([
        ["connect"], ["subscribe"], ["answer", "sub", 0, OK], ["unsubscribe"],
        ["answer", "unsub", 0, {"ok": False, "reason": "not subscribed on request"}],
        ["timers"],
    ])  # fmt: skip
    assert result["sent"] == ["sub", "unsub"]
    assert result["answers"][-1] == ["unsub", False, "not subscribed on request"]
