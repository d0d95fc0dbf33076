"""Fuzzing where untrusted input comes in: stream entries (any producer can XADD any
fields), the bridge processing them, and ``POST /api/``.

Properties, not examples: whatever comes in, the contract answers with an Event or a
ContractError, the bridge publishes or dead-letters (and acks) every entry, and the
API answers with a 4xx, never a 500.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as label
from hypothesis import strategies as st
from streambridge.webapp.app import create_app
from werkzeug.security import generate_password_hash

from streambridge import defaults
from streambridge.contract import CHANNEL_PATTERN, ContractError, Event
from streambridge.queue import emit_message
from streambridge.settings import WebSettings

FUZZ = settings(
    max_examples=120,
    database=None,  # no .hypothesis directory; a failure prints its example
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app for all examples, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
SMALL_BODY_LIMIT = 2_000
# Small (the size check answers first) and the default (deep JSON reaches the parser).
body_limits = st.sampled_from([SMALL_BODY_LIMIT, defaults.MAX_BODY_BYTES])
MAX_REQUEST_BYTES = 4_096

# -- strategies --------------------------------------------------------------------------

lone_surrogates = st.characters(categories=["Cs"])
any_char = st.one_of(st.characters(), lone_surrogates)
weird_text = st.one_of(
    st.text(any_char, max_size=40),
    st.sampled_from(["", " ", "\x00", "\n", "/", "user:bob", "message", "a" * 65, "ü" * 33]),
    st.integers(60_000, 70_000).map(lambda n: "x" * n),  # huge
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(any_char, max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(any_char, max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


body_texts = st.one_of(
    json_values.map(_dumps),  # NaN, Infinity, lone surrogates included
    st.text(any_char, max_size=60),  # mostly not JSON at all
    st.sampled_from(["NaN", "[NaN]", '{"a": Infinity}', "-Infinity", "1e400", '"\\ud800"', "{}"]),
    st.integers(1, 3_000).map(lambda d: "[" * d + "]" * d),  # deep
    st.integers(1, 3_000).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.integers(SMALL_BODY_LIMIT - 5, SMALL_BODY_LIMIT + 5).map(lambda n: '"' + "a" * n + '"'),
    st.integers(65_530, 65_545).map(lambda n: '"' + "b" * n + '"'),  # around the default limit
)
channels = st.one_of(
    st.from_regex(CHANNEL_PATTERN, fullmatch=True),
    st.sampled_from(["message", "connect", "disconnect", 'a"b', "a\\b", "a b", "é", "m\n"]),
    weird_text,
)
rooms = st.one_of(st.sampled_from(["user:alice", "user:bob", "team:blue", "x" * 256]), weird_text)
namespaces = st.one_of(st.sampled_from(["/", "/chat", "/" + "n" * 255, "chat", "//"]), weird_text)
CONTRACT_FIELDS = {"channel": channels, "body": body_texts, "room": rooms, "namespace": namespaces}


@st.composite
def text_fields(draw) -> dict[str, str]:
    """Entries that are mostly event-shaped: some contract fields, maybe others."""
    fields = {}
    for name, values in CONTRACT_FIELDS.items():
        if draw(st.integers(0, 9)) < 8:  # usually present
            fields[name] = draw(values)
    fields.update(draw(st.dictionaries(weird_text, weird_text, max_size=2)))
    return fields


clean_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
plausible_fields = st.fixed_dictionaries(
    {
        "channel": st.from_regex(CHANNEL_PATTERN, fullmatch=True),
        "body": clean_json.map(lambda v: json.dumps(v, ensure_ascii=False)),
    },
    optional={
        "room": st.one_of(st.sampled_from(["user:alice", "user:bob"]), st.text(max_size=300)),
        "namespace": st.one_of(st.just("/"), st.text(max_size=20).map(lambda t: "/" + t)),
    },
)
"""Entries that are often valid, with quotes, backslashes and control characters in
rooms and namespaces: the other side of the contract gets exercised too."""


def _as_bytes(text: str) -> bytes:
    # Lone surrogates become the (invalid) bytes a careless producer would send.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def any_fields(draw) -> dict:
    """Text or bytes keys and values, in any mix, plus arbitrary binary."""
    fields = draw(st.one_of(text_fields(), plausible_fields))
    mixed: dict = {}
    for key, value in fields.items():
        key_out = _as_bytes(key) if draw(st.booleans()) else key
        value_out = _as_bytes(value) if draw(st.booleans()) else value
        mixed[key_out] = value_out
    mixed.update(draw(st.dictionaries(st.binary(max_size=12), st.binary(max_size=40), max_size=2)))
    return mixed


# -- the contract ------------------------------------------------------------------------


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(name)

    return json.loads(text, parse_constant=refuse)


@FUZZ
@given(fields=st.one_of(any_fields(), st.none(), st.just({})), limit=body_limits)
@example(fields={"channel": "m", "body": '"\ud800"'}, limit=defaults.MAX_BODY_BYTES)
@example(fields={"channel": "m", "body": "1", "room": "\ud800"}, limit=defaults.MAX_BODY_BYTES)
@example(
    fields={b"channel": b"m", b"body": b'"\xed\xa0\x80"'}, limit=defaults.MAX_BODY_BYTES
)  # a surrogate, UTF-8-ish
@example(
    fields={"channel": "m", "body": "[" * 30_000 + "]" * 30_000}, limit=defaults.MAX_BODY_BYTES
)  # 60 KB, deep
@example(fields={"channel": "m", "body": "NaN"}, limit=defaults.MAX_BODY_BYTES)
def test_from_entry_returns_an_event_or_a_contract_error(fields, limit):
    try:
        event = Event.from_entry(fields, max_body_bytes=limit)
    except ContractError as exc:
        assert isinstance(exc.reason, str)
        assert exc.reason
        label("refused")
        return
    label("an event")
    # Whatever got through is exactly what the contract promises.
    assert re.fullmatch(CHANNEL_PATTERN, event.channel)
    assert len(event.body.encode("utf-8")) <= limit
    body = _strict_json(event.body)
    assert event.namespace.startswith("/")
    assert Event.from_entry(event.to_fields(), max_body_bytes=limit) == event
    # The bridge's hand-built queue message is valid JSON carrying the body unchanged.
    message = json.loads(emit_message(event, "2-0", "1-0", "epoch"))
    assert message["event"] == event.channel
    assert message["data"][0] == body
    assert message["room"] == event.room
    assert message["namespace"] == event.namespace


def _key(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else _as_bytes(value)


# -- POST /api/ --------------------------------------------------------------------------

PASSWORD = "alice-password"
API_STATUSES = {200, 400, 403, 413, 415}  # 403: a room alice may not publish to


@pytest.fixture
def api(tmp_path, fake):
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps({"alice": generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")})
    )
    web_settings = WebSettings(
        redis_url="redis://unused.invalid:1/0",
        users_file=str(users),
        secret_key="x" * 40,
        async_mode="threading",
        max_request_bytes=MAX_REQUEST_BYTES,
        max_body_bytes=SMALL_BODY_LIMIT,
        api_rate_limit="",  # thousands of requests a minute, on purpose
    )
    app = create_app(web_settings, {"WTF_CSRF_ENABLED": False}, redis_client=fake)
    client = app.test_client()
    assert (
        client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 302
    )
    return client


def _post(api, body: bytes, content_type: str = "application/json"):
    return api.post("/api/", data=body, content_type=content_type)


event_items = st.fixed_dictionaries(
    {"channel": channels, "body": json_values},
    optional={"room": st.one_of(st.none(), rooms), "namespace": namespaces, "extra": json_values},
)
plausible_items = st.fixed_dictionaries(
    {"channel": st.from_regex(CHANNEL_PATTERN, fullmatch=True), "body": clean_json},
    optional={
        "room": st.one_of(st.none(), st.sampled_from(["user:bob"]), st.text(max_size=300)),
        "namespace": st.one_of(st.just("/"), st.text(max_size=20).map(lambda t: "/" + t)),
    },
)
api_json = st.one_of(json_values, event_items, plausible_items, st.lists(event_items, max_size=3))


def _encode(value, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(value=api_json, ascii_only=st.booleans())
def test_api_answers_any_json_with_a_4xx_or_200_never_500(api, fake, value, ascii_only):
    before = fake.xlen("events") if fake.exists("events") else 0
    response = _post(api, _encode(value, ascii_only))
    label(f"status {response.status_code}")
    assert response.status_code in API_STATUSES, response.get_data()[:300]
    assert response.is_json  # 413 too: RequestBounds answers in JSON
    after = fake.xlen("events") if fake.exists("events") else 0
    assert after == before + (1 if response.status_code == 200 else 0)


big_bodies = st.integers(MAX_REQUEST_BYTES - 60, MAX_REQUEST_BYTES * 3).map(
    lambda n: b'{"channel":"m","body":"' + b"a" * n + b'"}'
)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.text(any_char, max_size=80).map(_as_bytes),
        big_bodies,
        st.sampled_from(
            [
                b"",
                b"\xff\xfe{}",
                b"\xef\xbb\xbf{}",  # BOM
                b'{"channel":"m","body":' + b"1" * 5_000 + b"}",  # int over 4300 digits
                b'{"channel":"m","body":1e99999}',
                b'{"channel":"m","body":NaN}',
                b'{"channel":"m","body":"\\ud800"}',
                b'{"channel":"m","body":1,"room":"\\udfff"}',
                b'{"channel":"m","channel":"n","body":1}',  # duplicate keys
                b"\x00" * 50,
            ]
        ),
    ),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1"]
    ),
)
def test_api_answers_any_bytes_with_a_4xx_or_200_never_500(api, body, content_type):
    response = _post(api, body, content_type)
    label(f"status {response.status_code}")
    assert response.status_code in API_STATUSES, response.get_data()[:300]


@pytest.mark.parametrize("depth", [1_000, 2_000])
def test_api_deeply_nested_json_is_a_400_not_a_500(api, depth):
    body = b'{"channel":"m","body":' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) <= MAX_REQUEST_BYTES  # small: well within the request size limit
    response = _post(api, body)
    assert response.status_code == 400


def _strict_verdict(text: str) -> bool:
    """The standard library's strict JSON decoder alone, with the body rules."""
    from streambridge import contract

    try:
        decoder = contract._BOUNDED
        value = decoder.decode(text)
    except (ValueError, RecursionError):
        return False
    return contract._depth(value) <= contract.MAX_BODY_DEPTH


json_like = st.one_of(
    st.text(alphabet='{}[]",:0123456789.eE+-tfnaulrs \\ud\x00\ud800é', max_size=40),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=12,
    ).map(lambda v: json.dumps(v)),
)


@FUZZ
@given(text=json_like)
@example(text='"\\ud800"')  # orjson refuses a lone surrogate escape; JSON allows it
@example(text="[" * 40 + "]" * 40)
def test_the_fast_json_check_gives_the_strict_decoders_verdict(text):
    from streambridge.contract import check_json_text

    try:
        check_json_text(text)
        verdict = True
    except ValueError:
        verdict = False
    assert verdict == _strict_verdict(text)
