"""The click commands: ``streambridge ...`` and, in a Flask app, ``flask streambridge ...``.

``streambridge`` (run by ``streambridge.cli.main``) has a subcommand per role; each
imports what it runs only when it runs (``web`` is monkey-patched before this module
is imported; ``publish`` never loads the web tier). ``flask streambridge`` (the
``flask.commands`` entry point) holds the same ``status``, ``dead`` and ``publish``
command objects, with the settings of the app's StreamBridge extension.

A command ends by raising ``click.exceptions.Exit`` with its exit status, so the
status is the same under ``main()`` and under the ``flask`` command.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NoReturn

import click

from streambridge.listening import CannotListen

log = logging.getLogger(__name__)
CONTEXT = {"help_option_names": ["-h", "--help"]}
SOURCE = "streambridge.settings_source"  # ctx.meta key: where commands get settings


class Group(click.Group):
    """Lists its commands in the order they were added (click sorts them)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


# -- where the settings come from ---------------------------------------------------------


class Environment:
    """``streambridge ...``: settings from the environment; the process is ours, so the
    command sets up logging."""

    configures_logging = True

    def values(self) -> dict[str, Any]:
        return {}


class FlaskApp:
    """``flask streambridge ...``: the settings of the app's StreamBridge extension (the
    environment when the app has none); the host app owns its logging."""

    configures_logging = False

    def __init__(self, ctx: click.Context) -> None:
        self.ctx = ctx
        self._values: dict[str, Any] | None = None

    def values(self) -> dict[str, Any]:
        if self._values is None:
            self._values = self._read(self._app())
        return self._values

    def _app(self) -> Any:
        from flask import current_app
        from flask.cli import ScriptInfo

        if current_app:
            return current_app._get_current_object()
        return self.ctx.ensure_object(ScriptInfo).load_app()

    @staticmethod
    def _read(app: Any) -> dict[str, Any]:
        try:
            from streambridge.webapp.ext.extension import state
        except ImportError:  # no web extras installed: no app can use the extension
            return {}
        try:
            settings = state(app).settings
        except KeyError:  # this app does not use the extension
            return {}
        from streambridge.settings import CommonSettings

        return {name: getattr(settings, name) for name in CommonSettings.model_fields}


def _source(ctx: click.Context) -> Environment | FlaskApp:
    return ctx.meta.get(SOURCE) or Environment()


def _values(ctx: click.Context) -> dict[str, Any]:
    return _source(ctx).values()


# -- running a command ----------------------------------------------------------------


def _finish(
    ctx: click.Context, work: Callable[[], int | None], *, logging: bool = True, redis: bool = False
) -> NoReturn:
    """Run ``work`` and exit with its status: 2 for a bad setting (named, no secret, no
    traceback), 1 when Redis cannot be reached (``redis``), 130 on Ctrl-C."""
    # A host app is loaded first of all: it may monkey-patch (eventlet) on import, which
    # must come before this process imports redis or sockets.
    _values(ctx)
    from pydantic import ValidationError

    try:
        code = _guarded(ctx, work, logging=logging, redis=redis)
    except ValidationError as exc:
        from streambridge.settings import env_name

        for error in exc.errors(include_input=False, include_url=False):
            where = env_name(str(error["loc"][0])) if error["loc"] else "settings"
            print(f"error: {where}: {error['msg']}", file=sys.stderr)
        code = 2
    raise click.exceptions.Exit(code or 0)


def _guarded(ctx: click.Context, work: Callable[[], int | None], *, logging: bool, redis: bool):
    if logging and _source(ctx).configures_logging:
        from streambridge import logging_setup
        from streambridge.settings import CommonSettings

        common = CommonSettings()
        logging_setup.configure(common.log_level, common.log_format)
    try:
        if not redis:
            return work()
        from streambridge.redis_conn import ERRORS

        try:
            return work()
        except ERRORS as exc:  # one-shot commands: say so and fail, no traceback
            print(f"error: cannot reach Redis: {exc}", file=sys.stderr)
            return 1
    except CannotListen as exc:  # a taken port: say which, no traceback
        log.error("cannot_listen", extra={"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# Decorators (each use makes an option of its own).
_host = click.option("--host", metavar="HOST", help="address to listen on (default 127.0.0.1)")
_port = click.option("--port", type=int, metavar="PORT", help="port to listen on (default 5000)")


# -- streambridge dev / web / bridge ------------------------------------------------------


@click.command(
    "dev",
    context_settings=CONTEXT,
    short_help="run everything on this machine (embedded Redis if no REDIS_URL)",
    help="Run everything on this machine (embedded Redis if no REDIS_URL).",
)
@_host
@_port
@click.option(
    "--user", default="demo", metavar="USER", help="name of the demo user (default: demo)"
)
@click.pass_context
def dev(ctx: click.Context, **options: Any) -> NoReturn:
    def work() -> int:
        from streambridge import dev as dev_mode

        return dev_mode.run(SimpleNamespace(**options))

    _finish(ctx, work)


@click.command(
    "web",
    context_settings=CONTEXT,
    short_help="run the web app (Socket.IO server)",
    help="Run the web app (Socket.IO server).",
)
@_host
@_port
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> NoReturn:
    def work() -> int:
        from streambridge.async_mode import prepare

        prepare()  # already done by cli.main before click loaded; here for other callers
        from streambridge.settings import WebSettings

        settings = WebSettings()
        overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        if overrides:
            settings = settings.model_copy(update=overrides)
        from streambridge import logging_setup

        logging_setup.configure(settings.log_level, settings.log_format)
        from streambridge.webapp.app.server import serve

        return serve(settings)

    _finish(ctx, work, logging=False)


@click.command(
    "bridge",
    context_settings=CONTEXT,
    short_help="run the bridge daemon",
    help="Run the bridge daemon until SIGTERM or SIGINT.",
)
@click.option(
    "--consumer",
    metavar="CONSUMER",
    help="consumer name (default: the host name; one per live bridge)",
)
@click.option("--group", metavar="GROUP", help="consumer group (default: bridge)")
@click.option(
    "--check",
    is_flag=True,
    help="exit 0 if the bridge with this consumer name is alive, 1 if not (health check)",
)
@click.pass_context
def bridge(ctx: click.Context, **options: Any) -> NoReturn:
    def work() -> int:
        from streambridge.bridge import cli as bridge_cli
        from streambridge.settings import BridgeSettings

        return bridge_cli.run(SimpleNamespace(**options), BridgeSettings())

    _finish(ctx, work)


# -- publish ------------------------------------------------------------------------------


@click.command(
    "publish",
    context_settings=CONTEXT,
    short_help="append an event (or NDJSON from stdin)",
    help="""Append an event (or NDJSON from stdin); prints its stream id.

\b
CHANNEL  Socket.IO event name, e.g. message
BODY     JSON text, e.g. '"hi"' or '{"n": 1}'
""",
)
@click.argument("channel", required=False)
@click.argument("body", required=False)
@click.option("--room", metavar="ROOM", help="deliver only to this room (user:<name> for one user)")
@click.option(
    "--namespace", default="/", metavar="NAMESPACE", help="Socket.IO namespace (default /)"
)
@click.option("--text", is_flag=True, help="send BODY as a JSON string instead of JSON text")
@click.option(
    "--key",
    metavar="KEY",
    help="idempotency key: run again with the same key (a retry) and the event is "
    "delivered once; prints the first event's id",
)
@click.option(
    "--stdin",
    is_flag=True,
    help='read NDJSON lines {"channel", "body", "room"?, "idempotency_key"?} from stdin '
    "and append them all",
)
@click.pass_context
def publish(ctx: click.Context, **options: Any) -> NoReturn:
    def work() -> int:
        from streambridge.producers import cli as producer_cli
        from streambridge.publisher import Publisher
        from streambridge.settings import ProducerSettings

        publisher = Publisher(settings=ProducerSettings(**_values(ctx)))
        return producer_cli.run(SimpleNamespace(**options), publisher)

    _finish(ctx, work, redis=True)


# -- status and dead ----------------------------------------------------------------------


def _ops(ctx: click.Context, action: Callable[..., int]) -> NoReturn:
    """Run ``action(ops, client, settings)`` with the bridge's view of Redis."""

    def work() -> int:
        from streambridge import ops
        from streambridge.settings import BridgeSettings

        settings = BridgeSettings(**_values(ctx))
        # As the bridge connects (daemon.connect), so dead letters that are not UTF-8
        # read too; not through the daemon module, which needs the [bridge] extra.
        client = settings.connect(encoding_errors="surrogateescape")
        return action(ops, client, settings)

    _finish(ctx, work, redis=True)


@click.command(
    "status",
    context_settings=CONTEXT,
    short_help="stream, group lag, pending per consumer, dead letters",
    help="Stream, group lag, pending per consumer, dead letters.",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> NoReturn:
    def action(ops: Any, client: Any, settings: Any) -> int:
        data = ops.status(client, settings)
        print(json.dumps(data, indent=2) if as_json else ops.format_status(data))
        return 0

    _ops(ctx, action)


@click.group(
    "dead",
    cls=Group,
    context_settings=CONTEXT,
    short_help="inspect and requeue dead letters",
    help="Inspect and requeue dead letters.",
)
def dead() -> None:
    pass


@dead.command(
    "list",
    context_settings=CONTEXT,
    short_help="show dead letters with their reasons",
    help="Show dead letters with their reasons.",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=100, metavar="COUNT", help="at most this many"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def dead_list(ctx: click.Context, count: int, as_json: bool) -> NoReturn:
    def action(ops: Any, client: Any, settings: Any) -> int:
        letters = ops.dead_letters(client, settings, count)
        if as_json:
            print(json.dumps(letters, indent=2))  # ASCII: bytes that are not UTF-8 escape
        for d in [] if as_json else letters:
            print(f"{d['id']}  (was {d['original_id']})  {d['reason']}")
            print(f"    {json.dumps(d['fields'])[:200]}")
        return 0

    _ops(ctx, action)


@dead.command(
    "requeue",
    context_settings=CONTEXT,
    short_help="append dead letters to the stream again",
    help="""Append dead letters to the stream again.

\b
IDS  dead-letter ids
""",
)
@click.argument("ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="every dead letter")
@click.pass_context
def dead_requeue(ctx: click.Context, ids: tuple[str, ...], every: bool) -> NoReturn:
    if every == bool(ids):
        print("error: give dead-letter ids or --all (not both)", file=sys.stderr)
        raise click.exceptions.Exit(2)
    from streambridge.ids import StreamId

    for dead_id in ids:
        try:
            StreamId.parse(dead_id)
        except ValueError:
            print(f"error: {dead_id!r} is not a stream id", file=sys.stderr)
            raise click.exceptions.Exit(2) from None

    def action(ops: Any, client: Any, settings: Any) -> int:
        try:
            moved = ops.requeue(client, settings, None if every else list(ids))
        except KeyError as exc:
            print(f"error: no dead letter {exc.args[0]}", file=sys.stderr)
            return 1
        for dead_id, new_id in moved:
            print(f"{dead_id} -> {new_id}")
        print(f"requeued {len(moved)} dead letter(s)", file=sys.stderr)
        return 0

    _ops(ctx, action)


# -- user ---------------------------------------------------------------------------------


@click.group(
    "user",
    cls=Group,
    context_settings=CONTEXT,
    short_help="manage the users file",
    help="Manage the users file (STREAMBRIDGE_USERS_FILE) of the standalone app.",
)
def user() -> None:
    pass


@user.command(
    "add",
    context_settings=CONTEXT,
    short_help="create a user or set its password",
    help="Create a user or set its password.",
)
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin")
@click.option("--room", "rooms", multiple=True, metavar="ROOM", help="grant an extra room")
@click.option(
    "--publish",
    "publish_rooms",
    multiple=True,
    metavar="ROOM",
    help="the only rooms it may publish to through POST /api/ (default: those it receives)",
)
@click.option("--no-broadcast", is_flag=True, help="it may not publish to everyone via /api/")
@click.option(
    "--subscribe",
    "subscribe_patterns",
    multiple=True,
    metavar="PATTERN",
    help="rooms its pages may subscribe to on request (fnmatch pattern, e.g. 'team:*')",
)
@click.option("--admin", is_flag=True, help="it may see the operator dashboard")
@click.pass_context
def user_add(
    ctx: click.Context,
    name: str,
    password_stdin: bool,
    rooms: tuple[str, ...],
    publish_rooms: tuple[str, ...],
    no_broadcast: bool,
    subscribe_patterns: tuple[str, ...],
    admin: bool,
) -> NoReturn:
    def work() -> int:
        from streambridge.settings import WebSettings
        from streambridge.webapp.app.users import UserStore

        store = UserStore(WebSettings().users_file)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            import getpass

            password = getpass.getpass(f"password for {name}: ")
        try:
            store.add(
                name,
                password,
                list(rooms),
                publish=list(publish_rooms) or None,
                broadcast=not no_broadcast,
                subscribe=list(subscribe_patterns),
                admin=admin,
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"user {name} saved in {store.path}")
        return 0

    _finish(ctx, work)


@user.command(
    "list", context_settings=CONTEXT, short_help="list user names", help="List user names."
)
@click.pass_context
def user_list(ctx: click.Context) -> NoReturn:
    def work() -> int:
        from streambridge.settings import WebSettings
        from streambridge.webapp.app.users import UserStore

        for name in UserStore(WebSettings().users_file).names():
            print(name)
        return 0

    _finish(ctx, work)


# -- the groups ---------------------------------------------------------------------------


@click.group("streambridge", cls=Group, context_settings=CONTEXT)
def streambridge() -> None:
    """Durable real-time push for Flask apps."""


for _command in (dev, web, bridge, publish, user, status, dead):
    streambridge.add_command(_command)


@click.group("streambridge", cls=Group, context_settings=CONTEXT)
@click.pass_context
def flask_commands(ctx: click.Context) -> None:
    """streambridge for this app: its stream, dead letters and publishing.

    Settings come from the app's StreamBridge extension (the environment when the app
    has none)."""
    ctx.meta[SOURCE] = FlaskApp(ctx)


for _command in (status, dead, publish):
    flask_commands.add_command(_command)


def run(argv: list[str]) -> int:
    """``streambridge ARGV...``: its exit status (usage errors exit 2)."""
    try:
        code = streambridge.main(args=argv, prog_name="streambridge", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    return code or 0
