"""``streambridge``: one command, a subcommand per role.

Handlers import their modules lazily: ``web`` must monkey-patch eventlet before
anything imports sockets.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streambridge", description="Durable real-time push for Flask apps."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev", help="run everything on this machine (embedded Redis if no REDIS_URL)"
    )
    _host_port(dev)
    dev.add_argument("--user", default="demo", help="name of the demo user (default: demo)")

    web = sub.add_parser("web", help="run the web app (Socket.IO server)")
    _host_port(web)

    from streambridge.bridge import cli as bridge_cli
    from streambridge.producers import cli as producer_cli

    bridge = sub.add_parser("bridge", help="run the bridge daemon")
    bridge_cli.add_arguments(bridge)

    publish = sub.add_parser("publish", help="append an event (or NDJSON from stdin)")
    producer_cli.add_arguments(publish)

    user = sub.add_parser("user", help="manage the users file")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser("add", help="create a user or set its password")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--room", action="append", default=[], help="grant an extra room")
    add.add_argument(
        "--publish",
        action="append",
        metavar="ROOM",
        help="the only rooms it may publish to through POST /api/ (default: those it receives)",
    )
    add.add_argument(
        "--no-broadcast", action="store_true", help="it may not publish to everyone via /api/"
    )
    user_sub.add_parser("list", help="list user names")

    status = sub.add_parser("status", help="stream, group lag, pending per consumer, dead letters")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")

    dead = sub.add_parser("dead", help="inspect and requeue dead letters")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    dead_list = dead_sub.add_parser("list", help="show dead letters with their reasons")
    dead_list.add_argument("--count", type=_positive_int, default=100, help="at most this many")
    dead_list.add_argument("--json", action="store_true")
    dead_requeue = dead_sub.add_parser("requeue", help="append dead letters to the stream again")
    dead_requeue.add_argument("ids", nargs="*", help="dead-letter ids")
    dead_requeue.add_argument("--all", action="store_true", help="every dead letter")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _host_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 5000)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["web"]:
        from streambridge.async_mode import prepare

        prepare()  # first of all: eventlet must patch before sockets are imported
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    try:
        return _run(args)
    except ValidationError as exc:  # a bad setting: say which and why, no traceback
        from streambridge.settings import env_name

        for error in exc.errors(include_input=False, include_url=False):
            where = env_name(str(error["loc"][0])) if error["loc"] else "settings"
            print(f"error: {where}: {error['msg']}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "web":
        return _web(args)

    from streambridge import logging_setup
    from streambridge.settings import CommonSettings

    common = CommonSettings()
    logging_setup.configure(common.log_level, common.log_format)
    try:
        if args.command == "bridge":
            from streambridge.bridge import cli as bridge_cli
            from streambridge.settings import BridgeSettings

            return bridge_cli.run(args, BridgeSettings())
        if args.command == "user":
            return _user(args)
        if args.command in ("publish", "status", "dead"):
            from streambridge.redis_conn import ERRORS

            try:
                if args.command == "publish":
                    from streambridge.producers import cli as producer_cli

                    return producer_cli.run(args)
                return _ops(args)
            except ERRORS as exc:  # one-shot commands: say so and fail, no traceback
                print(f"error: cannot reach Redis: {exc}", file=sys.stderr)
                return 1
        if args.command == "dev":
            from streambridge import dev

            return dev.run(args)
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)


def _web_settings(args: argparse.Namespace):
    from streambridge.settings import WebSettings

    settings = WebSettings()
    overrides = {k: getattr(args, k) for k in ("host", "port") if getattr(args, k) is not None}
    return settings.model_copy(update=overrides) if overrides else settings


def _web(args: argparse.Namespace) -> int:
    settings = _web_settings(args)
    from streambridge import logging_setup

    logging_setup.configure(settings.log_level, settings.log_format)
    from streambridge.webapp.app.server import serve

    return serve(settings)


def _ops(args: argparse.Namespace) -> int:
    import json

    from streambridge.bridge import ops
    from streambridge.bridge.daemon import connect
    from streambridge.settings import BridgeSettings

    settings = BridgeSettings()
    client = connect(settings)  # reads dead letters that are not UTF-8, too
    if args.command == "status":
        data = ops.status(client, settings)
        print(json.dumps(data, indent=2) if args.json else ops.format_status(data))
        return 0
    if args.dead_command == "list":
        letters = ops.dead_letters(client, settings, args.count)
        if args.json:
            print(json.dumps(letters, indent=2))  # ASCII: bytes that are not UTF-8 escape
        for d in [] if args.json else letters:
            print(f"{d['id']}  (was {d['original_id']})  {d['reason']}")
            print(f"    {json.dumps(d['fields'])[:200]}")
        return 0
    if args.all == bool(args.ids):
        print("error: give dead-letter ids or --all (not both)", file=sys.stderr)
        return 2
    from streambridge.ids import StreamId

    for dead_id in args.ids:
        try:
            StreamId.parse(dead_id)
        except ValueError:
            print(f"error: {dead_id!r} is not a stream id", file=sys.stderr)
            return 2
    try:
        moved = ops.requeue(client, settings, None if args.all else args.ids)
    except KeyError as exc:
        print(f"error: no dead letter {exc.args[0]}", file=sys.stderr)
        return 1
    for dead_id, new_id in moved:
        print(f"{dead_id} -> {new_id}")
    print(f"requeued {len(moved)} dead letter(s)", file=sys.stderr)
    return 0


def _user(args: argparse.Namespace) -> int:
    from streambridge.settings import WebSettings
    from streambridge.webapp.app.users import UserStore

    store = UserStore(WebSettings().users_file)
    if args.user_command == "list":
        for name in store.names():
            print(name)
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass(f"password for {args.name}: ")
    try:
        store.add(
            args.name, password, args.room, publish=args.publish, broadcast=not args.no_broadcast
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.name} saved in {store.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
