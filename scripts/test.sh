#!/usr/bin/env bash
# Set up (idempotent, including redis-server and chromium) and run lint and the full suite
# (web servers under the default async mode, gevent), then the tests that go through the
# async server again under eventlet, which stays supported.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# A worker per core (pytest-xdist), each test file in one worker (its fixtures start once).
.venv/bin/python -m pytest -n logical --dist loadfile "$@"
# Under eventlet: what the async server carries (sockets, catch-up, rooms, presence, and
# the security tests at the socket level; the HTTP-only ones run under gevent above, as
# do the bridge's own SIGTERM test, which starts no web server, and the API's HTTP-only
# refusals).
security=tests/integration/test_security.py
e2e=tests/integration/test_end_to_end.py
STREAMBRIDGE_TEST_ASYNC_MODE=eventlet exec .venv/bin/python -m pytest -q -n logical --dist loadfile \
  --deselect "$e2e::test_bridge_sigterm_exits_zero" \
  --deselect "$e2e::test_post_api_without_login_is_401_and_appends_nothing" \
  --deselect "$e2e::test_post_api_bad_input_is_400_with_reason" \
  "$e2e" tests/integration/test_exact_recovery.py \
  tests/integration/test_subscriptions.py tests/integration/test_presence.py \
  "$security::test_socket_from_another_origin_is_refused_even_with_a_valid_session" \
  "$security::test_oversize_socketio_message_closes_only_that_connection" \
  "$security::test_logout_disconnects_that_logins_sockets_within_a_second" \
  "$security::test_a_client_cannot_join_another_users_room" \
  "$security::test_json_that_trips_the_queue_listener_does_not_stop_delivery"
