"""Every default in one place, each a named constant."""

REDIS_URL = "redis://localhost:6379/0"
"""Used when neither ``REDIS_URL`` nor ``STREAMBRIDGE_REDIS_URL`` is set."""

STREAM = "events"
"""Stream key that producers append to."""

DEAD_SUFFIX = ":dead"
"""Dead letters live in ``<stream>:dead``."""

QUEUE_CHANNEL = "flask-socketio"
"""Pub/sub channel of the Socket.IO message queue; the same on bridge and web."""

MAX_SHARDS = 1024
"""Most shard streams (``STREAMBRIDGE_SHARDS``); a shard key has at most 4 digits."""

MAXLEN = 100_000
"""Approximate number of entries the stream keeps for catch-up."""

DEAD_MAXLEN = 10_000
"""Approximate number of dead letters kept."""

MAX_BODY_BYTES = 64 * 1024
"""Largest event body (JSON text, UTF-8 bytes)."""

GROUP = "bridge"
"""Consumer group shared by all bridges."""

BATCH_SIZE = 500
"""Entries read per XREADGROUP."""

BLOCK_MS = 2_000
"""How long one XREADGROUP waits; short so stop and a deleted stream are noticed."""

CLAIM_IDLE_MS = 30_000
"""Entries pending longer than this on another consumer are claimed."""

MAX_DELIVERIES = 5
"""An entry delivered more often than this goes to dead letters."""

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
"""Bounds of the exponential back-off after a Redis error."""

SOCKETIO_PATH = "/ws/socket.io"
"""Where the web app serves Socket.IO."""

CLIENT_SCRIPT_URL = "/streambridge.js"
"""Where the browser client (socket.io client + streambridge.js, one file) is served."""

REPLAY_LIMIT = 10_000
"""Most entries replayed to one client on connect; a longer gap is not recovered."""

REPLAY_PAGE = 200
"""Replayed events sent to a client before waiting for its queue to drain."""

MAX_CLIENT_QUEUE = 2_000
"""Packets queued for one slow client before it is disconnected (it catches up later)."""

PING_INTERVAL_S = 25.0
"""Engine.IO's ping interval (python-socketio's default)."""

MAX_SUBSCRIPTIONS = 100
"""Rooms one connection may subscribe to on request (besides its own and granted ones)."""

SUBSCRIBE_RATE = 5.0
SUBSCRIBE_BURST = 20
"""Subscribe and unsubscribe requests of one connection: this many at once, then this
many per second."""

PRESENCE_TTL_S = 15.0
"""A web server refreshes its connections' presence every third of this; a server that
died leaves no one present for longer than this plus a third (20 s)."""

AUTHORIZE_TIMEOUT_S = 2.0
"""A room authorization hook that has not answered by then counts as no."""

REDIS_POOL_SIZE = 50
"""Redis connections shared by one web server's green threads (they wait for one)."""

MAX_CONNECTIONS = 10_000
"""Concurrent connections (green threads) one web server accepts."""

MAX_REQUEST_BYTES = 256 * 1024
"""Largest HTTP request body the web app accepts."""

MAX_CONNECTIONS_PER_ADDRESS = 200
"""Open connections one client address may hold on one web server."""

MAX_UNFINISHED_PER_ADDRESS = 20
"""Connections of one address whose request head (line and headers) is still arriving."""

CONNECT_TIMEOUT_S = 10.0
"""An Engine.IO session (anyone may open one) that has not connected to the Socket.IO
namespace by then is closed."""

REQUEST_HEAD_TIMEOUT_S = 10.0
"""Time from a request's first byte to its last header (slow-drip requests end here)."""

HOST = "127.0.0.1"
PORT = 5000
"""Where ``streambridge web`` and ``streambridge dev`` listen."""

USERS_FILE = "users.json"
"""JSON file of user name -> werkzeug password hash."""

HISTORY_SIZE = 1_000
"""Events kept per room for catch-up (at least this many: trimming is approximate)."""

HISTORY_TTL_S = 86_400
"""A room's history is dropped this long (up to 9/8 of it) after its last event."""

HISTORY_PAGE = 50
"""Events per history page when the caller does not say (at most HISTORY_API_LIMIT)."""

HISTORY_API_LIMIT = 100
"""Most events one history request returns (the default page is 50, or this if less)."""

IDEMPOTENCY_WINDOW_S = 300
"""Two events with the same idempotency key from one sender in one room, processed by the
bridge within this time of each other, are one."""

BRIDGE_ALIVE_TTL_S = 15
"""A running bridge refreshes its liveness key (which holds its consumer name) every
second with this TTL: a dead one's expires within it."""

DASHBOARD_PATH = "/streambridge/dashboard"
"""Where the operator dashboard is served (admins only)."""

DASHBOARD_SAMPLE_S = 5.0
"""How often each web server samples the dashboard's charts into Redis."""

DASHBOARD_WINDOW_S = 15 * 60
"""How far back the dashboard's charts go (the samples kept)."""
