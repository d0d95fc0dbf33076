"""``streambridge``: the console script, and ``python -m streambridge.cli``.

The commands themselves are click commands in ``streambridge.commands``. This module
imports nothing before it knows the command: ``web`` must let gevent or eventlet monkey-patch
before anything imports sockets or threading (click imports threading).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["web"]:
        from streambridge.async_mode import prepare

        prepare()  # first of all: gevent or eventlet must patch before sockets are imported
    from streambridge.commands import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
