"""Who the dashboard's sampler sends to (no Redis needed: the overview is stood in for)."""

from __future__ import annotations

from typing import Any

from streambridge.webapp.ext.dashboard import Dashboard
from streambridge.webapp.ext.identity import Viewer

from streambridge.settings import WebSettings


class NoSamples:
    def take(self) -> None:
        pass


def dashboard(sent: list[tuple[str, Any]]) -> Dashboard:
    return Dashboard(
        None,
        WebSettings(),
        NoSamples(),  # type: ignore[arg-type]
        viewer_of=lambda sid: Viewer(name=sid),
        is_admin=lambda viewer: True,
        is_connected=lambda sid: True,
        send=lambda sid, namespace, event, data: sent.append((sid, data[0])),
    )


def test_a_socket_that_stops_watching_while_the_overview_is_built_is_sent_nothing():
    """The unwatch is answered before the push would go: nothing may follow that answer."""
    sent: list[tuple[str, Any]] = []
    board = dashboard(sent)
    board.overview = lambda: {"figures": 0}  # type: ignore[method-assign]
    for sid in ("alice", "dora"):
        assert board.request(sid, {"watch": True})["watching"] is True

    def overview() -> dict[str, Any]:
        # dora's unwatch comes in while the overview's Redis round trips are under way.
        assert board.request("dora", {"watch": False}) == {"ok": True, "watching": False}
        return {"figures": 1}

    board.overview = overview  # type: ignore[method-assign]
    assert board.tick() == 1
    assert sent == [("alice", {"figures": 1})]


def test_every_watcher_is_sent_the_overview_once():
    sent: list[tuple[str, Any]] = []
    board = dashboard(sent)
    board.overview = lambda: {"figures": 2}  # type: ignore[method-assign]
    for sid in ("alice", "dora"):
        board.request(sid, {"watch": True})
    assert board.tick() == 2
    assert sorted(sent) == [("alice", {"figures": 2}), ("dora", {"figures": 2})]
