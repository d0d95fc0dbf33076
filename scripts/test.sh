#!/usr/bin/env bash
# Set up (idempotent, including redis-server and chromium) and run lint and the full suite
# (web servers under the default async mode, gevent), then the tests that go through the
# async server again under eventlet, which stays supported.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
STREAMBRIDGE_TEST_ASYNC_MODE=eventlet exec .venv/bin/python -m pytest -q \
  tests/integration/test_end_to_end.py tests/integration/test_exact_recovery.py \
  tests/integration/test_security.py tests/integration/test_subscriptions.py \
  tests/integration/test_presence.py
