"""systemd's notify protocol in a few lines (no dependency): READY=1, STOPPING=1,
WATCHDOG=1 as datagrams to $NOTIFY_SOCKET. Does nothing when not run by systemd."""

from __future__ import annotations

import socket


def notify(socket_path: str | None, message: str) -> bool:
    if not socket_path:
        return False
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
