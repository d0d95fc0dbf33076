#!/bin/sh
# A complete producer for cron or any shell script: one XADD with redis-cli.
#   REDIS_URL=redis://localhost:6379/0 ./cron_publish.sh message '{"text": "backup done"}' [room]
#   IDEMPOTENCY_KEY=backup-2026-12-05 ./cron_publish.sh ...   # a retry is delivered once
# The body is JSON text. MAXLEN ~ keeps the stream bounded, like publish() does.
# Sharded streams (STREAMBRIDGE_SHARDS=N): the key is <stream>:{crc32(room) % N}, the
# CRC-32 taken from gzip's trailer. On a Redis Cluster set STREAMBRIDGE_CLUSTER=1 and
# REDIS_URL to any one node (redis-cli then follows redirections).
set -eu
channel=$1
body=$2
room=${3:-}
stream=${STREAMBRIDGE_STREAM:-events}
maxlen=${STREAMBRIDGE_MAXLEN:-100000}
shards=${STREAMBRIDGE_SHARDS:-1}
url=${REDIS_URL:-redis://localhost:6379/0}
# Socket.IO's own event names and streambridge's prefix (streambridge/contract.py).
case "$channel" in
  connect|connect_error|disconnect|disconnecting|newListener|removeListener|__disconnect_final|streambridge:*)
    echo "cron_publish.sh: channel $channel is reserved" >&2
    exit 2 ;;
esac
if [ "$shards" -gt 1 ]; then
  # gzip ends with the CRC-32 of its input (4 bytes, little-endian), then its length.
  set -- $(printf %s "$room" | gzip -c | tail -c8 | od -An -tu1 -N4)
  if [ $# -ne 4 ]; then
    echo "cron_publish.sh: could not compute the CRC-32 of the room (gzip, od)" >&2
    exit 1
  fi
  crc=$(( $1 + 256 * $2 + 65536 * $3 + 16777216 * $4 ))
  stream="$stream:{$((crc % shards))}"
fi
cluster=
case "${STREAMBRIDGE_CLUSTER:-0}" in 1|true|yes) cluster=-c ;; esac
set -- channel "$channel" body "$body"
if [ -n "$room" ]; then set -- "$@" room "$room"; fi
# IDEMPOTENCY_KEY (1-128 printable ASCII, no space): run again with the same key (a
# retry after a timeout) and the event is delivered once.
if [ -n "${IDEMPOTENCY_KEY:-}" ]; then
  if ! printf %s "$IDEMPOTENCY_KEY" | grep -Eqx '[!-~]{1,128}'; then
    echo "cron_publish.sh: IDEMPOTENCY_KEY must be 1-128 printable ASCII characters, no space" >&2
    exit 2
  fi
  set -- "$@" idempotency_key "$IDEMPOTENCY_KEY"
fi
exec redis-cli $cluster -u "$url" XADD "$stream" MAXLEN '~' "$maxlen" '*' "$@"
