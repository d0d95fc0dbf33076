"""Binding a listening port, with a clear error when it cannot be had."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class CannotListen(RuntimeError):
    """A port a server needs is taken (or not allowed): the process says so and exits 1."""


@contextlib.contextmanager
def binding(host: str, port: int, what: str) -> Iterator[None]:
    """Turn the ``OSError`` of a bind inside the block into :class:`CannotListen`,
    naming the address and what it was for (``--port``, ``STREAMBRIDGE_METRICS_PORT``)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CannotListen(f"cannot listen on {host}:{port} ({what}): {reason}") from exc
