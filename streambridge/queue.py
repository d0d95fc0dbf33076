"""The Socket.IO message-queue protocol, as python-socketio's PubSubManager speaks it.

The bridge writes emit messages itself (instead of calling ``emit()``) so that it
can pipeline many PUBLISHes, see each one's result before it acks, and build
each message with one serialization: the body is already JSON text and is
spliced in as it is.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis, RedisCluster
from redis.client import PubSub

from streambridge.contract import Event
from streambridge.redis_conn import as_cluster

if TYPE_CHECKING:
    from streambridge.settings import CommonSettings

BRIDGE_HOST_ID = "streambridge-bridge"
"""host_id of bridge messages; never equal to a web server's random host_id."""

META_MARKER = "streambridge"
"""Key in the meta argument that marks an emit as a stream event."""

BATCH_METHOD = "streambridge.batch.2"
"""The queue message that carries several stream events, in publication order::

    {"method": "streambridge.batch.2", "host_id": ..., "epoch": ..., "shard": <int or null>,
     "events": [[position, entry id, channel, sender, body, namespace, room], ...]}

``sender`` and ``room`` are null for none, ``body`` is the event's JSON. A room's history
keeps each event's item without its last two (its key names them). Each item is
what one emit message would carry, without the parts every event of a batch shares:
the bridge builds and Redis publishes a third of the bytes. A Socket.IO server that is
not streambridge ignores it (an unknown method); streambridge's web servers turn each
item into its emit message (``unbatched``) and deliver them one by one. They also read
``FORMER_BATCH_METHOD`` messages, whose items had namespace and room after the channel,
so bridges of the release before can still run while web servers are upgraded."""
FORMER_BATCH_METHOD = "streambridge.batch"
BATCH_TAIL = "]}"
ITEM_OPEN = '["'
"""What comes before a batch item's position; after it the item's ``item_tail``, its
``item_place`` and ``ITEM_CLOSE`` (the publish script splices them; a room's history
keeps the tail)."""
ITEM_CLOSE = "]"
MAX_BATCH_BYTES = 256 * 1024
"""A batch message's size limit: past it the batch goes on in another message. Big
enough that a PUBLISH carries hundreds of ordinary events, small enough that no
subscriber's output buffer takes a burst of megabytes."""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@functools.lru_cache(maxsize=4096)
def _quoted(value: str | None) -> str:
    # Rooms and namespaces repeat a lot; encode each once.
    return _dumps(value)


def meta_json(
    position: str,
    entry_id: str,
    epoch: str,
    shard: int | None = None,
    sender: str | None = None,
) -> str:
    """The meta as an emit message carries it: ``meta`` and the stream-event marker."""
    return _dumps(marked_meta(position, entry_id, epoch, shard, sender))


def marked_meta(
    position: str, entry_id: str, epoch: str, shard: int | None, sender: str | None
) -> dict:
    """``meta`` with the marker that makes an emit a stream event (queue messages only)."""
    out = meta(position, entry_id, epoch, shard, sender)
    out[META_MARKER] = 1
    return out


def meta(position: str, entry_id: str, epoch: str, shard: int | None, sender: str | None) -> dict:
    """The meta of one delivery as a dict (what ``meta_json`` writes, for the web side)."""
    out: dict[str, Any] = {"id": position, "entry": entry_id, "epoch": epoch}
    if shard is not None:
        out["shard"] = shard
    if sender is not None:
        out["from"] = sender
    return out


def emit_message(
    event: Event, position: str, entry_id: str, epoch: str, shard: int | None = None
) -> str:
    """The emit message that makes every web server emit ``event`` published at
    ``position``: what ``unbatched`` makes of its batch item.

    Browsers get ``(body, meta)``: ``meta.id`` the event's position in its shard (the
    order of publication), ``meta.entry`` its stream id, ``meta.epoch``, plus ``"shard"``
    when the stream is sharded and ``"from"`` when a user published it. Built by hand:
    the body is validated JSON text and the channel needs no escaping.
    """
    return (
        f'{{"method":"emit","event":"{event.channel}","data":[{event.body},'
        f"{meta_json(position, entry_id, epoch, shard, event.sender)}],"
        f'"binary":false,"namespace":{_quoted(event.namespace)},"room":{_quoted(event.room)},'
        f'"skip_sid":null,"callback":null,"host_id":"{BRIDGE_HOST_ID}"}}'
    )


def batch_head(epoch: str, shard: int | None) -> str:
    """A batch message up to its first item."""
    where = "null" if shard is None else str(shard)
    return (
        f'{{"method":"{BATCH_METHOD}","host_id":"{BRIDGE_HOST_ID}",'
        f'"epoch":{_quoted(epoch)},"shard":{where},"events":['
    )


def item_tail(event: Event, entry_id: str) -> str:
    """A batch item's text from its position to its place: what a room's history keeps
    of an event (``history.APPEND``)."""
    # Stream ids are digits and a dash, a channel needs no escaping (its pattern).
    return f'","{entry_id}","{event.channel}",{_quoted(event.sender)},{event.body}'


def item_place(event: Event) -> str:
    """The end of a batch item: its namespace and room (what a history key names)."""
    return _place(event.namespace, event.room)


@functools.lru_cache(maxsize=4096)
def _place(namespace: str, room: str | None) -> str:
    return f",{_quoted(namespace)},{_quoted(room)}"


def batch_item(event: Event, position: str, entry_id: str) -> str:
    """One event's item of a batch message (what the publish script writes)."""
    return ITEM_OPEN + position + item_tail(event, entry_id) + item_place(event) + ITEM_CLOSE


def parsed_item(position: str, tail: str) -> list:
    """``[position, entry id, channel, sender, body]`` from an item's tail (a room's
    history entry); ValueError if it is not one."""
    item = json.loads(ITEM_OPEN + position + tail + ITEM_CLOSE)
    if not (type(item) is list and len(item) == 5 and _is_head(item)):
        raise ValueError("not a history item")
    return item


def batch_message(items: list[str], epoch: str, shard: int | None = None) -> str:
    """The batch message of these items (what the publish script writes)."""
    return batch_head(epoch, shard) + ",".join(items) + BATCH_TAIL


def unbatched(data: dict) -> list[dict]:
    """The emit messages a decoded queue message carries: one per item when it is a
    batch (a malformed item is skipped, a malformed batch gives none), else the message
    itself."""
    method = data.get("method")
    if method != BATCH_METHOD and method != FORMER_BATCH_METHOD:
        return [data]
    events, epoch, shard = data.get("events"), data.get("epoch"), data.get("shard")
    if not (isinstance(events, list) and isinstance(epoch, str)):
        return []
    if shard is not None and (type(shard) is not int or shard < 0):
        return []
    if method == FORMER_BATCH_METHOD:
        # [position, entry, channel, namespace, room, sender, body]: to today's order.
        events = [
            [i[0], i[1], i[2], i[5], i[6], i[3], i[4]] if type(i) is list and len(i) == 7 else i
            for i in events
        ]
    return [_emit(item, epoch, shard) for item in events if is_item(item)]


def is_item(item: Any) -> bool:
    """Whether ``item`` has a batch item's shape (see ``BATCH_METHOD``)."""
    return (
        type(item) is list
        and len(item) == 7
        and _is_head(item)
        and type(item[5]) is str
        and (item[6] is None or type(item[6]) is str)
    )


def _is_head(item: list) -> bool:
    """Position, entry id, channel and sender have their types."""
    return all(type(text) is str for text in item[:3]) and (item[3] is None or type(item[3]) is str)


def _emit(item: list, epoch: str, shard: int | None) -> dict:
    position, entry_id, channel, sender, body, namespace, room = item
    data = marked_meta(position, entry_id, epoch, shard, sender)
    return {
        "method": "emit",
        "event": channel,
        "data": [body, data],
        "binary": False,
        "namespace": namespace,
        "room": room,
        "skip_sid": None,
        "callback": None,
        "host_id": BRIDGE_HOST_ID,
    }


def publish_command(sharded: bool) -> str:
    """SPUBLISH (sharded pub/sub: one cluster node carries the channel) or PUBLISH
    (classic: a cluster copies it to every node)."""
    return "SPUBLISH" if sharded else "PUBLISH"


@dataclass(frozen=True)
class Route:
    """How one shard's queue messages are sent: the command and the channel that the
    publish script (``history.APPEND``) is given."""

    command: str
    channel: str


def shard_route(settings: CommonSettings) -> Route:
    """The route of the one shard ``settings`` name (see ``for_shard``). On a cluster with
    sharded pub/sub, SPUBLISH on a channel in the shard's slot: the publish script runs
    on the node that holds the shard's keys and may only touch that slot. Otherwise
    PUBLISH on the queue channel, which a cluster copies to every node."""
    return Route(publish_command(settings.sharded_pubsub), settings.stream_channels[0])


def subscriber(client: Any, channel: str) -> PubSub:
    """A pub/sub connection for ``channel``. On a cluster, a plain one to the node that
    owns the channel's slot: it carries sharded messages, and classic ones reach every
    node. Subscribe/unsubscribe replies are kept: a server-side SUNSUBSCRIBE (the slot
    moved) must be seen."""
    cluster = as_cluster(client)
    if cluster is not None:
        client = channel_node(cluster, channel)
    return client.pubsub(ignore_subscribe_messages=False)


def channel_node(cluster: RedisCluster, channel: str) -> Redis:
    """A plain client of the cluster node that owns ``channel``'s slot (as the slot map
    in ``cluster`` says now)."""
    return cluster.get_redis_connection(cluster.get_node_from_key(channel))
