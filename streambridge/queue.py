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

BATCH_METHOD = "streambridge.batch"
"""The queue message that carries several stream events: ``{"method": BATCH_METHOD,
"host_id": ..., "events": [<emit message>, ...]}``, each item the emit message of one
event, in publication order. A Socket.IO server that is not streambridge ignores it (an
unknown method); streambridge's web servers deliver its items one by one."""
BATCH_HEAD = f'{{"method":"{BATCH_METHOD}","host_id":"{BRIDGE_HOST_ID}","events":['
BATCH_TAIL = "]}"
MAX_BATCH_BYTES = 256 * 1024
"""A batch message's size limit: past it the batch goes on in another message. Big
enough that a PUBLISH carries hundreds of ordinary events, small enough that no
subscriber's output buffer takes a burst of megabytes."""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@functools.lru_cache(maxsize=4096)
def _quoted(value: str | None) -> str:
    # Rooms and namespaces repeat a lot; encode each once.
    return _dumps(value)


BEFORE_POSITION = ',{"id":"'
"""What comes between a queue message's body and its position (the meta's first key)."""


def meta_tail(
    entry_id: str, epoch: str, shard: int | None = None, sender: str | None = None
) -> str:
    """The meta after its position: it is spliced in when the position is given."""
    # Stream ids are digits and a dash (Redis makes them); the rest is quoted once.
    where = "" if shard is None else f',"shard":{shard}'
    who = "" if sender is None else f',"from":{_quoted(sender)}'
    return f'","entry":"{entry_id}","epoch":{_quoted(epoch)}{where}{who},"{META_MARKER}":1}}'


def meta_json(
    position: str,
    entry_id: str,
    epoch: str,
    shard: int | None = None,
    sender: str | None = None,
) -> str:
    return BEFORE_POSITION[1:] + position + meta_tail(entry_id, epoch, shard, sender)


def meta(position: str, entry_id: str, epoch: str, shard: int | None, sender: str | None) -> dict:
    """The meta of one delivery as a dict (what ``meta_json`` writes, for the web side)."""
    out: dict[str, Any] = {"id": position, "entry": entry_id, "epoch": epoch}
    if shard is not None:
        out["shard"] = shard
    if sender is not None:
        out["from"] = sender
    return out


def emit_parts(
    event: Event, entry_id: str, epoch: str, shard: int | None = None
) -> tuple[str, str]:
    """The queue message that makes every web server emit ``event``, as the text before
    its body and the text after its position (the bridge's publish script puts them
    together, see ``history.APPEND``).

    Browsers get ``(body, meta)``: ``meta.id`` the event's position in its shard (the
    order of publication), ``meta.entry`` its stream id, ``meta.epoch``, plus ``"shard"``
    when the stream is sharded and ``"from"`` when a user published it. Built by hand,
    once: the body is validated JSON text and the channel needs no escaping.
    """
    before = f'{{"method":"emit","event":"{event.channel}","data":['
    after = (
        f"{meta_tail(entry_id, epoch, shard, event.sender)}],"
        f'"binary":false,"namespace":{_quoted(event.namespace)},"room":{_quoted(event.room)},'
        f'"skip_sid":null,"callback":null,"host_id":"{BRIDGE_HOST_ID}"}}'
    )
    return before, after


def emit_message(
    event: Event, position: str, entry_id: str, epoch: str, shard: int | None = None
) -> str:
    """The whole queue message of ``event`` published at ``position``."""
    before, after = emit_parts(event, entry_id, epoch, shard)
    return before + event.body + BEFORE_POSITION + position + after


def batch_message(messages: list[str]) -> str:
    """The batch message of these emit messages (what the publish script writes)."""
    return BATCH_HEAD + ",".join(messages) + BATCH_TAIL


def unbatched(data: dict) -> list[dict]:
    """The emit messages a decoded queue message carries: its items when it is a batch
    (items that are not objects are skipped), else the message itself."""
    if data.get("method") != BATCH_METHOD:
        return [data]
    events = data.get("events")
    if not isinstance(events, list):
        return []
    return [item for item in events if isinstance(item, dict)]


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
