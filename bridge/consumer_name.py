"""A bridge's consumer name, held by a liveness key while the bridge runs.

The name is stable across restarts (the host name by default), so a restarted bridge
replays its own pending entries at once instead of waiting for another bridge to claim
them. Two live bridges must never share it (they would take each other's pending
entries): the key names its holder (host, boot, PID namespace, pid), and

* a holder that ran in this very machine and PID namespace and whose process is gone is
  dead: its name is taken over at once;
* a holder that is alive there is a live duplicate: refused;
* any other holder (another host or container, an older bridge) cannot be judged from
  here: the new bridge waits for the key to expire (a live holder refreshes it every
  second, a dead one's expires within ``TTL_S``) and refuses if it never does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any, Literal

from streambridge import defaults

TTL_S = defaults.BRIDGE_ALIVE_TTL_S
EVERY_S = 1.0

Verdict = Literal["dead", "alive", "unknown"]


class DuplicateConsumer(Exception):
    """Another live bridge runs under this consumer name. Not retried; the process exits."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _place() -> str:
    """This machine's boot and this process's PID namespace: where a pid means something."""
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{_pid_namespace()}"


def owner_token() -> str:
    """``<host>|<boot>/<pid namespace>|<pid>|<random>``: who holds a name."""
    return f"{socket.gethostname()}|{_place()}|{os.getpid()}|{uuid.uuid4().hex[:8]}"


def verdict(holder: str) -> Verdict:
    """Whether the bridge that wrote ``holder`` is alive, as far as this process can tell."""
    parts = holder.split("|")
    if len(parts) != 4 or not parts[2].isdigit():
        return "unknown"  # an older bridge's key
    host, place, pid_text, _ = parts
    if host != socket.gethostname() or place != _place() or place.startswith("/"):
        return "unknown"  # its pid would mean another process here
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "alive"  # another user's process
    return "alive"


class ConsumerName:
    def __init__(self, client: Any, key: str, consumer: str, log: Any) -> None:
        self.redis = client
        self.key = key
        self.consumer = consumer
        self.log = log
        self.owner = owner_token()

    def claim(self, stopping: threading.Event) -> None:
        """Hold the name, or raise DuplicateConsumer. Waits at most about TTL_S for a
        holder that cannot be judged from here."""
        waited = 0.0
        while not stopping.is_set():
            if self.redis.set(self.key, self.owner, nx=True, ex=TTL_S):
                return
            holder = self.redis.get(self.key)
            if holder is None:
                continue  # expired in between: try again at once
            if holder == self.owner:
                self.redis.set(self.key, self.owner, ex=TTL_S)
                return
            judged = verdict(holder)
            if judged == "dead":
                self.log.warning("bridge.consumer_taken_over", extra={"previous": holder})
                self.redis.set(self.key, self.owner, ex=TTL_S)
                return
            if judged == "alive" or waited > TTL_S + EVERY_S:
                raise DuplicateConsumer(
                    f"consumer {self.consumer!r} is held by a live bridge ({holder}); give "
                    "each bridge its own STREAMBRIDGE_CONSUMER"
                )
            if waited == 0:
                self.log.warning(
                    "bridge.consumer_name_waiting", extra={"holder": holder, "up_to_s": TTL_S}
                )
            stopping.wait(EVERY_S)
            waited += EVERY_S

    def keep(self) -> None:
        """Refresh the key; raise DuplicateConsumer if a live bridge has taken the name."""
        holder = self.redis.get(self.key)
        if holder not in (None, self.owner) and verdict(holder) != "dead":
            raise DuplicateConsumer(
                f"consumer {self.consumer!r} was taken by another bridge ({holder})"
            )
        self.redis.set(self.key, self.owner, ex=TTL_S)

    def release(self) -> None:
        """On a clean stop: free the name at once for the next start."""
        with contextlib.suppress(Exception):
            if self.redis.get(self.key) == self.owner:
                self.redis.delete(self.key)
