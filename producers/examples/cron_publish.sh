#!/bin/sh
# A complete producer for cron or any shell script: one XADD with redis-cli.
#   REDIS_URL=redis://localhost:6379/0 ./cron_publish.sh message '{"text": "backup done"}' [room]
# The body is JSON text. MAXLEN ~ keeps the stream bounded, like publish() does.
set -eu
channel=$1
body=$2
room=${3:-}
stream=${STREAMBRIDGE_STREAM:-events}
maxlen=${STREAMBRIDGE_MAXLEN:-100000}
url=${REDIS_URL:-redis://localhost:6379/0}
if [ -n "$room" ]; then
  exec redis-cli -u "$url" XADD "$stream" MAXLEN '~' "$maxlen" '*' channel "$channel" body "$body" room "$room"
else
  exec redis-cli -u "$url" XADD "$stream" MAXLEN '~' "$maxlen" '*' channel "$channel" body "$body"
fi
