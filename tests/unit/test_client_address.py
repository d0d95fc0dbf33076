"""The per-address caps' notion of a client (webapp/client_address.py)."""

from __future__ import annotations

import pytest
from streambridge.webapp.ext.client_address import address_key


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("203.0.113.7", 50000), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 50000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff:ffff:ffff:ffff", 1, 0, 0), "2001:db8:1:2::/64"),  # same host
        (("2001:db8:1:3::1", 1, 0, 0), "2001:db8:1:3::/64"),  # another one
        (("::ffff:198.51.100.9", 1, 0, 0), "198.51.100.9"),  # IPv4 through an IPv6 socket
        (("fe80::1%eth0", 1, 0, 2), "fe80::/64"),
        ("", "local"),  # a unix socket
    ],
)
def test_ipv6_clients_are_counted_by_their_64(peer, key):
    assert address_key(peer) == key
