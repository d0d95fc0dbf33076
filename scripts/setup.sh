#!/usr/bin/env bash
# Install everything streambridge needs into this checkout: a virtualenv with the
# package (editable), the pinned npm packages, and the browser client copied into
# the web app's static files. With --test: also redis-server and chromium for the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
extras="embedded"
[[ $want_test == 1 ]] && extras="embedded,test"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"

if [[ ! -d node_modules/socket.io-client ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
mkdir -p webapp/static/vendor
cp node_modules/socket.io-client/dist/socket.io.min.js webapp/static/vendor/socket.io.min.js

if [[ $want_test == 1 ]]; then
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v chromium >/dev/null || missing+=(chromium)
  if (( ${#missing[@]} )); then
    if [[ $(id -u) == 0 ]]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "setup: please install: ${missing[*]} (Debian packages)" >&2
      exit 1
    fi
  fi
fi
