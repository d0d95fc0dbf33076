"""The operator dashboard's live side: each web server samples its figures every
``STREAMBRIDGE_DASHBOARD_SAMPLE_S`` (``dashboard_samples``) and sends the overview (the
shards' state and the charts' series) to its own sockets that watch the dashboard.

Only admins may watch: a socket asks with ``emit("streambridge:dashboard", {watch:
true}, ack)``; the answer is the overview, or ``{ok: false, error}`` for anyone else,
who is never sent anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from streambridge.webapp.ext.dashboard_samples import Samples
from streambridge.webapp.ext.identity import Viewer

from streambridge import ops
from streambridge.contract import RESERVED_PREFIX
from streambridge.redis_conn import ERRORS
from streambridge.settings import WebSettings

log = logging.getLogger(__name__)

DASHBOARD_EVENT = RESERVED_PREFIX + "dashboard"
NAMESPACE = "/"
ADMIN_RECHECK_S = 10.0  # how often a watcher's admin right is asked again


class Dashboard:
    def __init__(
        self,
        client: Any,
        settings: WebSettings,
        samples: Samples,
        *,
        viewer_of: Callable[[str], Viewer | None],
        is_admin: Callable[[Viewer], bool],
        is_connected: Callable[[str], bool],
        send: Callable[[str, str, str, list[Any]], None],
    ) -> None:
        """``viewer_of(sid)``: who a socket is; ``is_admin(viewer)``: the app's answer,
        with its time limit (an exception or a late answer is no); ``send(sid,
        namespace, event, data)``: to this server's own socket."""
        self.client = client
        self.settings = settings
        self.samples = samples
        self.viewer_of = viewer_of
        self.is_admin = is_admin
        self.is_connected = is_connected
        self.send = send
        self._watchers: dict[str, float] = {}  # sid -> when it asked
        self._lock = threading.Lock()

    # -- what it shows ------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        """Per shard: its stream, groups (lag, pending, oldest pending's age) and bridges;
        the charts' series. Raises Redis's errors."""
        status = ops.status(self.client, self.settings)
        shards = status.get("shards", [status])
        return {
            "at": round(time.time(), 3),
            "shards": shards,
            "dead_letters": sum(s["dead_letters"] for s in shards),
            "series": self.samples.series(),
            "step_s": self.samples.step_s(),
        }

    # -- who watches ----------------------------------------------------------------------
    def request(self, sid: str, data: Any) -> dict[str, Any]:
        """A socket's ``{watch: true|false}``; the acknowledgement."""
        viewer = self.viewer_of(sid)
        if viewer is None or not self.is_admin(viewer):
            log.warning(
                "socket.dashboard_refused",
                extra={"sid": sid, "user": viewer.name if viewer else None},
            )
            return {"ok": False, "error": "not allowed"}
        if not isinstance(data, dict) or not isinstance(data.get("watch", True), bool):
            return {"ok": False, "error": "send {watch: true} or {watch: false}"}
        if data.get("watch", True) is False:
            with self._lock:
                self._watchers.pop(sid, None)
            return {"ok": True, "watching": False}
        with self._lock:
            self._watchers[sid] = time.monotonic()
        try:
            return {"ok": True, "watching": True, **self.overview()}
        except ERRORS as exc:
            # Still watching: the next sample after Redis answers brings the overview.
            return {"ok": True, "watching": True, "error": f"redis: {exc}"}

    def watchers(self) -> list[str]:
        """The sockets to send to now: those still connected (``recheck_admins`` drops
        those no longer admins)."""
        with self._lock:
            current = list(self._watchers)
        gone = [sid for sid in current if not self.is_connected(sid)]
        with self._lock:
            for sid in gone:
                self._watchers.pop(sid, None)
        return [sid for sid in current if sid not in gone]

    def recheck_admins(self, start: Callable[..., Any], sleep: Callable[[float], None]) -> None:
        """Forever, every ``ADMIN_RECHECK_S``: ask the app again whether each watcher is
        still an admin, all at once, off the sampler (a slow hook never holds it up);
        a right taken away stops the pushes within that time."""
        while True:
            sleep(ADMIN_RECHECK_S)
            with self._lock:
                current = list(self._watchers)
            for sid in current:
                start(self._recheck, sid)

    def _recheck(self, sid: str) -> None:
        viewer = self.viewer_of(sid)
        if viewer is not None and self.is_admin(viewer):
            return
        with self._lock:
            self._watchers.pop(sid, None)
        if viewer is not None:
            log.info("dashboard.watcher_no_longer_admin", extra={"user": viewer.name})

    # -- the sampler ----------------------------------------------------------------------
    def run(self, sleep: Callable[[float], None]) -> None:
        """Forever: sample, then send the overview to this server's watchers. Through a
        Redis outage it keeps trying at the same pace and says so once."""
        failing = False
        step = self.settings.dashboard_sample_s
        while True:
            # In the middle of each step: every server samples once per step, whatever
            # its work took and a clock a little off from Redis's.
            sleep(step - (time.time() - step / 2) % step)
            try:
                self.tick()
            except ERRORS as exc:
                if not failing:
                    log.warning("dashboard.sample_failed", extra={"error": str(exc)})
                failing = True
                continue
            except Exception as exc:  # the sampler must outlive any one failure
                log.exception("dashboard.sample_failed", extra={"error": str(exc)})
                continue
            if failing:
                log.info("dashboard.sampling_again")
                failing = False

    def tick(self) -> int:
        """One sample, and the overview sent to the watchers; returns how many."""
        self.samples.take()
        watchers = self.watchers()
        if not watchers:
            return 0
        overview = self.overview()
        # Under the lock, and only to those still watching: a socket whose unwatch was
        # answered while the overview was built is sent nothing after that answer.
        with self._lock:
            watchers = [sid for sid in watchers if sid in self._watchers]
            for sid in watchers:
                self.send(sid, NAMESPACE, DASHBOARD_EVENT, [overview])
        return len(watchers)
