"""bridge/link.py against a real Redis: round trips in flight, read in order, as Redis sends
them (no redis-py response callback; this client decodes text)."""

from __future__ import annotations

import pytest
import redis
from streambridge.bridge.link import Link


@pytest.fixture
def link(redis_client):
    link = Link(redis_client)
    yield link
    link.close()


def test_two_round_trips_in_flight_are_answered_in_the_order_sent(link, redis_client):
    link.send([("SET", "k", "1"), ("INCR", "k")])
    link.send([("INCRBY", "k", 10), ("GET", "k")])
    assert link.replies() == ["OK", 2]
    assert link.replies() == [12, "12"]


def test_an_error_reply_is_returned_in_its_place_and_the_rest_still_read(link, redis_client):
    redis_client.set("s", "text")
    link.send([("INCR", "s"), ("XADD", "s", "*", "f", "v"), ("GET", "s")])
    incr, xadd, get = link.replies()
    assert isinstance(incr, redis.ResponseError)
    assert isinstance(xadd, redis.ResponseError) and "WRONGTYPE" in str(xadd)
    assert get == "text"


def test_a_packed_command_and_text_in_utf8(link, redis_client):
    link.send([link.pack(("SET", "k", "h\u00e9")), ("GET", "k")])
    assert link.replies() == ["OK", "h\u00e9"]


def test_closing_drops_the_replies_still_owed(link, redis_client):
    link.send([("SET", "k", "first")])
    link.close()
    link.send([("GET", "nothing")])
    assert link.replies() == [None]
    assert redis_client.get("k") == "first"  # sent, only its reply is dropped


def test_a_killed_connection_raises_and_the_next_round_trip_reconnects(link, redis_client):
    link.send([("CLIENT", "ID")])
    [own_id] = link.replies()
    redis_client.client_kill_filter(_id=own_id)
    link.send([("PING",)])
    with pytest.raises(redis.ConnectionError):
        link.replies()
    link.send([("PING",)])
    assert link.replies() == ["PONG"]


def test_no_health_check_is_sent_while_a_round_trip_is_in_flight(link, redis_client):
    # A PING of the health check would take the reply owed to the round trip in flight.
    link.send([("SET", "k", "v")])
    link._connection.health_check_interval = 1
    link._connection.next_health_check = 0  # due now
    link.send([("GET", "k")])
    assert link.replies() == ["OK"]
    assert link.replies() == ["v"]
