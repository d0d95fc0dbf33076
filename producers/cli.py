"""``streambridge publish``: one event from arguments, or NDJSON lines from stdin."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from streambridge.contract import ContractError, Event, check_json_text
from streambridge.publisher import PIPELINE_CHUNK, Publisher


def run(args: Any, publisher: Publisher | None = None) -> int:
    """``args``: the command's arguments (``channel``, ``body``, ``room``, ``namespace``,
    ``text``, ``key``, ``stdin``). ``publisher``: by default one with settings from the
    environment."""
    publisher = publisher if publisher is not None else Publisher()
    if args.stdin:
        if args.channel or args.body or args.key:
            print("error: --stdin takes no CHANNEL, BODY or --key", file=sys.stderr)
            return 2
        return publish_lines(publisher, sys.stdin, sys.stdout, sys.stderr)
    if args.channel is None or args.body is None:
        print("error: CHANNEL and BODY are required (or use --stdin)", file=sys.stderr)
        return 2
    try:
        if args.text:
            event = publisher.event(
                args.channel, args.body, args.room, args.namespace, idempotency_key=args.key
            )
        else:
            check_json_text(args.body)
            fields = {
                "channel": args.channel,
                "body": args.body,
                "room": args.room,
                "namespace": args.namespace,
            }
            if args.key is not None:
                fields["idempotency_key"] = args.key
            event = Event.parse(fields, max_body_bytes=publisher.settings.max_body_bytes)
    except ValueError as exc:
        reason = exc.reason if isinstance(exc, ContractError) else f"BODY is not JSON: {exc}"
        print(f"error: {reason} (use --text to send plain text)", file=sys.stderr)
        return 2
    print(publisher.publish_events([event])[0])
    return 0


def _parse_lines(
    publisher: Publisher, lines: IO[str], errors: IO[str], bad: list[int]
) -> Iterator[Event]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield publisher.event_from_item(json.loads(line))
        except (ValueError, RecursionError) as exc:
            reason = exc.reason if isinstance(exc, ContractError) else f"not JSON: {exc}"
            print(f"line {number}: {reason}", file=errors)
            bad.append(number)


def publish_lines(publisher: Publisher, lines: IO[str], out: IO[str], errors: IO[str]) -> int:
    """Append every valid line, in order; report bad lines and exit 1 if there were any."""
    bad: list[int] = []
    progress = _progress(errors)
    chunk: list[Event] = []
    sent = 0

    def flush() -> None:
        nonlocal sent
        for stream_id in publisher.publish_events(chunk):
            print(stream_id, file=out)
        sent += len(chunk)
        progress.update(len(chunk))
        chunk.clear()

    for event in _parse_lines(publisher, lines, errors, bad):
        chunk.append(event)
        if len(chunk) >= PIPELINE_CHUNK:
            flush()
    if chunk:
        flush()
    progress.close()
    print(f"published {sent} event(s), {len(bad)} bad line(s)", file=errors)
    return 1 if bad else 0


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(stream: IO[str]) -> Any:
    """A progress bar on a terminal, when tqdm is installed (it is optional: ``[all]``)."""
    if not stream.isatty():
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(file=stream, unit="ev", desc="publishing", leave=False)
