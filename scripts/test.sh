#!/usr/bin/env bash
# Set up (idempotent, including redis-server and chromium) and run lint and the full suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
