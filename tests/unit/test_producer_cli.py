"""``streambridge publish`` (producers/cli.py): NDJSON from stdin and the one-event path."""

from __future__ import annotations

import argparse
import io
import json
from types import SimpleNamespace

import pytest
from streambridge.producers import cli

from streambridge import commands
from streambridge.publisher import Publisher
from streambridge.settings import ProducerSettings


@pytest.fixture
def publisher(fake, producer_settings):
    return Publisher(fake, producer_settings)


def run_lines(publisher, text: str) -> tuple[int, list[str], str]:
    out, errors = io.StringIO(), io.StringIO()
    code = cli.publish_lines(publisher, io.StringIO(text), out, errors)
    return code, out.getvalue().splitlines(), errors.getvalue()


# -- NDJSON ------------------------------------------------------------------------------


def test_good_lines_are_appended_in_order_and_their_ids_printed(publisher, fake):
    lines = "".join(
        json.dumps({"channel": "m", "body": {"n": i}, "room": "user:alice"}) + "\n"
        for i in range(3)
    )
    code, ids, errors = run_lines(publisher, lines)
    assert code == 0
    entries = fake.xrange("events")
    assert ids == [i for i, _ in entries]
    assert [f["body"] for _, f in entries] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert all(f["room"] == "user:alice" for _, f in entries)
    assert "published 3 event(s), 0 bad line(s)" in errors


def test_bad_lines_are_reported_by_line_number_and_good_ones_still_sent(publisher, fake):
    text = "\n".join(
        [
            '{"channel": "m", "body": 1}',  # 1 ok
            "not json",  # 2
            "",  # 3 blank: skipped, still counted
            '{"channel": "bad channel", "body": 2}',  # 4
            '{"channel": "m", "body": 3}',  # 5 ok
            "[1, 2]",  # 6 not an object
            '{"channel": "m"}',  # 7 no body
            '{"channel": "m", "body": NaN}',  # 8 NaN is not JSON
            '{"channel": "m", "body": 4, "extra": true}',  # 9 unknown field
            '{"channel": "m", "body": 5}',  # 10 ok
        ]
    )
    code, ids, errors = run_lines(publisher, text + "\n")
    assert code == 1
    assert [f["body"] for _, f in fake.xrange("events")] == ["1", "3", "5"]
    assert len(ids) == 3
    reported = [line for line in errors.splitlines() if line.startswith("line ")]
    assert [line.split(":", 1)[0] for line in reported] == [
        "line 2",
        "line 4",
        "line 6",
        "line 7",
        "line 8",
        "line 9",
    ]
    assert reported[0].startswith("line 2: not JSON: ")
    assert reported[1].startswith("line 4: channel: must be 1-64 characters")
    assert reported[2] == "line 6: must be an object with channel and body"
    assert reported[3] == "line 7: channel and body are required"
    assert reported[4].startswith("line 8: body cannot be serialized as JSON")
    assert reported[5] == "line 9: unknown field(s): extra"
    assert "published 3 event(s), 6 bad line(s)" in errors


def test_only_bad_lines_appends_nothing_and_fails(publisher, fake):
    code, ids, errors = run_lines(publisher, "{}\n")
    assert (code, ids) == (1, [])
    assert not fake.exists("events")
    assert "line 1: channel and body are required" in errors


def test_empty_input_is_success(publisher, fake):
    code, ids, errors = run_lines(publisher, "\n  \n")
    assert (code, ids) == (0, [])
    assert not fake.exists("events")
    assert "published 0 event(s), 0 bad line(s)" in errors


def test_lines_are_sent_in_pipeline_chunks_in_order(publisher, fake, monkeypatch):
    monkeypatch.setattr(cli, "PIPELINE_CHUNK", 2)
    text = "".join(json.dumps({"channel": "m", "body": i}) + "\n" for i in range(5))
    code, ids, _ = run_lines(publisher, text + "oops\n")
    assert code == 1
    entries = fake.xrange("events")
    assert [f["body"] for _, f in entries] == ["0", "1", "2", "3", "4"]
    assert ids == [i for i, _ in entries]


def test_a_line_without_trailing_newline_and_crlf_lines_are_read(publisher, fake):
    text = '{"channel": "m", "body": 1}\r\n{"channel": "m", "body": 2}'
    code, ids, _ = run_lines(publisher, text)
    assert code == 0
    entries = fake.xrange("events")
    assert [f["body"] for _, f in entries] == ["1", "2"]
    assert ids == [i for i, _ in entries]


def test_a_deeply_nested_line_is_reported_and_the_rest_sent(publisher, fake):
    deep = json.dumps({"channel": "m", "body": 0})[:-2] + "[" * 30_000 + "]" * 30_000 + "}"
    text = '{"channel": "m", "body": 1}\n' + deep + '\n{"channel": "m", "body": 2}\n'
    code, _, errors = run_lines(publisher, text)
    assert code == 1
    assert [f["body"] for _, f in fake.xrange("events")] == ["1", "2"]
    assert "line 2: " in errors


# -- run(): one event from arguments ---------------------------------------------------


class PublishParser:
    """Parses arguments as ``streambridge publish`` does, into what it hands run()."""

    def parse_args(self, argv: list[str]) -> SimpleNamespace:
        return SimpleNamespace(**commands.publish.make_context("publish", list(argv)).params)


@pytest.fixture
def parser():
    return PublishParser()


@pytest.fixture
def use_fake(fake, monkeypatch):
    """run() makes its own Publisher; make it talk to fakeredis."""
    monkeypatch.setattr(
        cli,
        "Publisher",
        lambda: Publisher(fake, ProducerSettings(redis_url="redis://unused.invalid:1/0")),
    )
    return fake


def test_json_text_body_is_appended_verbatim(parser, use_fake, capsys):
    args = parser.parse_args(["message", '{"from": "cli",  "n": 1}', "--room", "user:bob"])
    assert cli.run(args) == 0
    out = capsys.readouterr().out.strip()
    [(stream_id, fields)] = use_fake.xrange("events")
    assert out == stream_id
    assert fields == {"channel": "message", "body": '{"from": "cli",  "n": 1}', "room": "user:bob"}


def test_namespace_argument_is_used(parser, use_fake):
    assert cli.run(parser.parse_args(["m", "1", "--namespace", "/chat"])) == 0
    [(_, fields)] = use_fake.xrange("events")
    assert fields["namespace"] == "/chat"


def test_text_flag_sends_the_body_as_a_json_string(parser, use_fake):
    assert cli.run(parser.parse_args(["message", 'hello "world"', "--text"])) == 0
    [(_, fields)] = use_fake.xrange("events")
    assert json.loads(fields["body"]) == 'hello "world"'


def test_run_works_from_a_plain_namespace(use_fake):
    args = argparse.Namespace(
        channel="m", body="[1]", room=None, namespace="/", text=False, stdin=False, key=None
    )
    assert cli.run(args) == 0
    assert [f for _, f in use_fake.xrange("events")] == [{"channel": "m", "body": "[1]"}]


@pytest.mark.parametrize("body", ["hello", "{'a': 1}", "NaN", ""])
def test_body_that_is_not_json_exits_2_with_a_hint(parser, use_fake, capsys, body):
    assert cli.run(parser.parse_args(["message", body])) == 2
    err = capsys.readouterr().err
    assert "BODY is not JSON" in err
    assert "use --text" in err
    assert not use_fake.exists("events")


def test_bad_channel_exits_2_with_the_contract_reason(parser, use_fake, capsys):
    assert cli.run(parser.parse_args(["bad channel!", "1"])) == 2
    err = capsys.readouterr().err
    assert "channel: must be 1-64 characters" in err
    assert not use_fake.exists("events")


def test_missing_body_exits_2(parser, use_fake, capsys):
    assert cli.run(parser.parse_args(["message"])) == 2
    assert "CHANNEL and BODY are required" in capsys.readouterr().err
    assert not use_fake.exists("events")


def test_stdin_with_positional_arguments_exits_2(parser, use_fake, capsys):
    assert cli.run(parser.parse_args(["--stdin", "message"])) == 2
    assert "--stdin takes no CHANNEL, BODY or --key" in capsys.readouterr().err


def test_stdin_reads_ndjson(parser, use_fake, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"channel": "m", "body": 1}\nbad\n'))
    assert cli.run(parser.parse_args(["--stdin"])) == 1
    captured = capsys.readouterr()
    [(stream_id, _)] = use_fake.xrange("events")
    assert captured.out.strip() == stream_id
    assert "line 2: not JSON" in captured.err
