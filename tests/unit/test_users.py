"""The users file (webapp/users.py): add, verify, rooms, reload, bad files."""

from __future__ import annotations

import functools
import json
import os
import stat

import pytest
from streambridge.webapp.app import users
from streambridge.webapp.app.users import User, UserStore, parse, user_room
from werkzeug.security import generate_password_hash


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    """Real werkzeug hashes, but cheap ones: scrypt costs ~0.1 s per call."""
    monkeypatch.setattr(
        users,
        "generate_password_hash",
        functools.partial(generate_password_hash, method="pbkdf2:sha256:1000"),
    )


@pytest.fixture
def store(tmp_path):
    return UserStore(tmp_path / "users.json")


# -- add / verify ------------------------------------------------------------------------


def test_add_then_verify(store):
    store.add("alice", "alice-password")
    user = store.verify("alice", "alice-password")
    assert user == store.get("alice")
    assert user.name == "alice"
    assert user.rooms == ()


def test_wrong_password_and_unknown_user_are_refused(store):
    store.add("alice", "alice-password")
    assert store.verify("alice", "wrong-password") is None
    assert store.verify("alice", "") is None
    assert store.verify("mallory", "alice-password") is None
    assert store.get("mallory") is None


def test_a_missing_file_means_no_users(store):
    assert not store.path.exists()
    assert store.names() == []
    assert store.verify("alice", "whatever1") is None


def test_the_file_holds_hashes_not_passwords_and_is_private(store):
    store.add("alice", "alice-password")
    text = store.path.read_text()
    assert "alice-password" not in text
    assert json.loads(text)["alice"].startswith("pbkdf2:sha256:1000$")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in store.path.parent.iterdir()] == ["users.json"]  # no temp left


def test_add_replaces_the_password_and_keeps_other_users(store):
    store.add("alice", "first-password")
    store.add("bob", "bob-password")
    store.add("alice", "second-password")
    assert store.verify("alice", "first-password") is None
    assert store.verify("alice", "second-password") is not None
    assert store.verify("bob", "bob-password") is not None
    assert store.names() == ["alice", "bob"]


def test_add_creates_missing_directories(tmp_path):
    store = UserStore(tmp_path / "etc" / "streambridge" / "users.json")
    store.add("alice", "alice-password")
    assert store.names() == ["alice"]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a b",
        "x" * 65,
        "al/ice",
        "bob:1",
        "é",
        "alice\n",
    ],
)
def test_names_must_match_the_pattern(store, name):
    with pytest.raises(ValueError, match="user name must be 1-64 characters"):
        store.add(name, "long-enough")
    assert not store.path.exists()


@pytest.mark.parametrize("name", ["a", "alice.smith@example.com", "x" * 64, "A_B-9"])
def test_allowed_names(store, name):
    store.add(name, "long-enough")
    assert store.names() == [name]


def test_password_needs_eight_characters(store):
    with pytest.raises(ValueError, match="at least 8 characters"):
        store.add("alice", "1234567")
    assert not store.path.exists()
    store.add("alice", "12345678")
    assert store.verify("alice", "12345678") is not None


# -- rooms -------------------------------------------------------------------------------


def test_rooms_are_stored_sorted_and_unique(store):
    store.add("carol", "carol-password", rooms=["team:blue", "alerts", "team:blue"])
    assert store.get("carol").rooms == ("alerts", "team:blue")
    raw = json.loads(store.path.read_text())["carol"]
    assert raw["rooms"] == ["alerts", "team:blue"]
    assert store.verify("carol", "carol-password") is not None


def test_parse_accepts_both_entry_forms():
    parsed = parse(json.dumps({"a": "hash-a", "b": {"password": "hash-b", "rooms": ["r1"]}}))
    assert parsed == {"a": User("a", "hash-a"), "b": User("b", "hash-b", ("r1",))}


# -- reload ------------------------------------------------------------------------------


def test_changes_by_another_writer_are_seen_without_restart(tmp_path):
    path = tmp_path / "users.json"
    web = UserStore(path)
    cli = UserStore(path)
    cli.add("alice", "alice-password")
    assert web.names() == ["alice"]
    cli.add("bob", "bob-password")
    assert web.names() == ["alice", "bob"]
    assert web.verify("bob", "bob-password") is not None


def test_unchanged_file_is_not_read_again(store, monkeypatch):
    store.add("alice", "alice-password")
    store.names()
    monkeypatch.setattr(users, "parse", lambda text: pytest.fail("file parsed again"))
    assert store.get("alice") is not None


def test_a_deleted_file_means_no_users(store):
    store.add("alice", "alice-password")
    assert store.names() == ["alice"]
    store.path.unlink()
    assert store.names() == []


def test_a_replaced_file_with_same_size_and_mtime_is_reloaded(tmp_path):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"alice": "hash-1"}))
    store = UserStore(path)
    assert store.get("alice").password_hash == "hash-1"
    before = path.stat()
    replacement = tmp_path / "new.json"
    replacement.write_text(json.dumps({"alice": "hash-2"}))
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, path)
    assert store.get("alice").password_hash == "hash-2"


# -- bad files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "Expecting value"),
        ('["alice"]', "must be a JSON object of name -> password hash"),
        ('{"alice": 1}', "bad entry for 'alice'"),
        ('{"alice": {"rooms": []}}', "bad entry for 'alice'"),
        ('{"alice": {"password": 5}}', "bad entry for 'alice'"),
    ],
)
def test_a_bad_file_is_an_error_that_says_why(store, text, message):
    store.path.write_text(text)
    with pytest.raises(ValueError, match=message):
        store.get("alice")


def test_a_fixed_file_is_read_after_an_error(store):
    store.path.write_text("{broken")
    with pytest.raises(ValueError):
        store.names()
    store.path.write_text(json.dumps({"alice": "hash"}))
    assert store.names() == ["alice"]


# -- who may receive what --------------------------------------------------------------


def test_user_room_and_own_room():
    assert user_room("alice") == "user:alice"
    assert User("alice", "h").own_room == "user:alice"


@pytest.mark.parametrize(
    ("room", "allowed"),
    [
        (None, True),  # broadcast
        ("user:carol", True),  # its own room
        ("team:blue", True),  # granted
        ("user:alice", False),  # someone else's
        ("team:red", False),
        ("", False),
        ("user:carol ", False),
        ("USER:carol", False),
        ("team:blue:sub", False),
    ],
)
def test_may_receive(room, allowed):
    carol = User("carol", "h", ("team:blue",))
    assert carol.may_receive(room) is allowed


def test_publish_rules_narrow_what_a_user_may_publish(store):
    store.add("alice", "password-1", ["team:blue", "team:red"], publish=["team:blue"])
    store.add("bob", "password-2", broadcast=False)
    store.add("carol", "password-3", ["team:blue"])
    alice, bob, carol = store.get("alice"), store.get("bob"), store.get("carol")
    assert alice.may_publish("team:blue") and alice.may_publish(None)
    assert not alice.may_publish("team:red")  # receives it, may not publish to it
    assert not alice.may_publish("user:alice")  # narrowed to team:blue
    assert bob.may_publish("user:bob") and not bob.may_publish(None)
    assert carol.may_publish("team:blue") and carol.may_publish("user:carol")
    assert not carol.may_publish("user:bob")  # never where it may not receive
    raw = json.loads(store.path.read_text())
    assert raw["alice"]["publish"] == ["team:blue"] and raw["bob"]["broadcast"] is False
    assert isinstance(raw["carol"], dict) and "publish" not in raw["carol"]


@pytest.mark.parametrize(
    "entry", [{"password": "h", "publish": "team:blue"}, {"password": "h", "broadcast": "no"}]
)
def test_bad_publish_rules_are_an_error(entry):
    with pytest.raises(ValueError, match="bad publish rules"):
        parse(json.dumps({"alice": entry}))


def test_subscribe_patterns_are_stored_and_matched(store):
    store.add("erin", "long-enough", subscribe=["team:*", "order:1?", "team:*"])
    erin = store.get("erin")
    assert erin.subscribe == ("order:1?", "team:*")
    assert erin.may_subscribe("team:blue")
    assert erin.may_subscribe("order:12")
    assert not erin.may_subscribe("order:123")
    assert not erin.may_subscribe("Team:blue")  # case counts
    assert not erin.may_subscribe("secret")


def test_another_users_room_never_matches_a_pattern():
    user = User("erin", "hash", subscribe=("*",))
    assert user.may_subscribe("anything")
    assert user.may_subscribe("user:erin")
    assert not user.may_subscribe("user:bob")


def test_no_patterns_means_no_room_on_request():
    assert not User("erin", "hash").may_subscribe("team:blue")


def test_subscribe_must_be_a_list():
    with pytest.raises(ValueError, match="subscribe"):
        parse(json.dumps({"erin": {"password": "h", "subscribe": "team:*"}}))


def test_admin_flag_is_stored_and_must_be_a_boolean(store):
    store.add("ops", "long-enough", admin=True)
    store.add("erin", "long-enough")
    assert store.get("ops").admin and not store.get("erin").admin
    assert json.loads(store.path.read_text())["ops"]["admin"] is True
    with pytest.raises(ValueError, match="admin"):
        parse(json.dumps({"ops": {"password": "h", "admin": "yes"}}))
