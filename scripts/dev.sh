#!/usr/bin/env bash
# Set up (idempotent) and run the whole system on this machine: `streambridge dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streambridge dev "$@"
