"""What the web server's per-address caps count as one client."""

from __future__ import annotations

import ipaddress
from typing import Any


def address_key(peer: Any) -> str:
    """What the per-address caps count: an IPv4 address as it is, an IPv6 one by its /64
    (one host usually holds a whole /64, so single addresses would be no cap at all)."""
    if not (isinstance(peer, tuple) and peer):
        return "local"
    host = str(peer[0])
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))
