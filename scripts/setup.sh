#!/usr/bin/env bash
# Install everything streambridge needs into this checkout: a virtualenv with the
# package (editable, every extra) and the pinned npm packages (the Node producer
# example and the benchmark's clients). With --test: also redis-server and chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
extras="all,bench"
[[ $want_test == 1 ]] && extras="all,bench,test"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"

if [[ ! -d node_modules/socket.io-client ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

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
