"""Binding a listening port, with a clear error when it cannot be had."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

WEB = "the web server"
METRICS = "the metrics server (STREAMBRIDGE_METRICS_HOST, STREAMBRIDGE_METRICS_PORT)"


class CannotListen(RuntimeError):
    """An address a server needs is taken (or not allowed): the ``streambridge``
    commands say so in one line and exit 1."""

    def __init__(self, host: str, port: int, what: str, reason: str) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"cannot listen on {where} for {what}: {reason}")


@contextlib.contextmanager
def binding(host: str, port: int, what: str) -> Iterator[None]:
    """Turn the ``OSError`` of a bind (or listen) inside the block into
    :class:`CannotListen`, naming the address and what it was for."""
    try:
        yield
    except OSError as exc:
        raise CannotListen(host, port, what, exc.strerror or str(exc)) from exc
