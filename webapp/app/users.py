"""The users file: JSON of name -> werkzeug password hash.

A value may also be an object ``{"password": <hash>, "rooms": [...], "publish": [...],
"broadcast": false, "subscribe": [...], "admin": true}``: ``rooms`` grants extra rooms to receive;
``publish`` narrows the rooms the user may publish to through ``POST /api/`` (default:
every room it may receive); ``broadcast: false`` stops it publishing to everyone;
``subscribe`` lists patterns (``fnmatch``: ``team:*``, ``order:1?``) of rooms its pages
may ask for (``sb.subscribe``; default none); ``admin: true`` lets it see the operator
dashboard. Another user's ``user:`` room never matches. The file is re-read when
it changes, so ``streambridge user add`` takes effect without a restart.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from streambridge.webapp.ext.identity import USER_ROOM_PREFIX, Viewer, user_room
from werkzeug.security import check_password_hash, generate_password_hash

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# Compared against when the user does not exist, so timing does not reveal names.
_DUMMY_HASH = generate_password_hash("streambridge-dummy-password")


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    rooms: tuple[str, ...] = field(default_factory=tuple)
    publish: tuple[str, ...] | None = None  # None: every room it may receive
    broadcast: bool = True
    subscribe: tuple[str, ...] = field(default_factory=tuple)  # fnmatch patterns
    admin: bool = False  # sees the operator dashboard

    def viewer(self, login_id: str | None = None) -> Viewer:
        return Viewer(self.name, frozenset(self.rooms), login_id)

    @property
    def own_room(self) -> str:
        return user_room(self.name)

    def may_receive(self, room: str | None) -> bool:
        return self.viewer().may_receive(room)

    def may_subscribe(self, room: str) -> bool:
        """A room on request: one its ``subscribe`` patterns match (case counts)."""
        if room.startswith(USER_ROOM_PREFIX) and room != self.own_room:
            return False
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.subscribe)

    def may_publish(self, room: str | None) -> bool:
        """Only where it may receive, narrowed by ``publish`` and ``broadcast``."""
        if room is None:
            return self.broadcast
        return self.may_receive(room) and (self.publish is None or room in self.publish)


class UserStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._users: dict[str, User] = {}

    def get(self, name: str) -> User | None:
        return self._load().get(name)

    def verify(self, name: str, password: str) -> User | None:
        user = self.get(name)
        if user is None:
            check_password_hash(_DUMMY_HASH, password)
            return None
        return user if check_password_hash(user.password_hash, password) else None

    def names(self) -> list[str]:
        return sorted(self._load())

    def _load(self) -> dict[str, User]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._users = parse(self.path.read_text(encoding="utf-8"))
                self._stamp = stamp
            return self._users

    def add(
        self,
        name: str,
        password: str,
        rooms: list[str] | None = None,
        *,
        publish: list[str] | None = None,
        broadcast: bool = True,
        subscribe: list[str] | None = None,
        admin: bool = False,
    ) -> None:
        """Create or replace a user; the file is rewritten atomically, mode 0600."""
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError("user name must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
        if len(password) < 8:
            raise ValueError("password must be at least 8 characters")
        raw = json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
        entry: dict[str, object] = {"password": generate_password_hash(password)}
        if rooms:
            entry["rooms"] = sorted(set(rooms))
        if publish is not None:
            entry["publish"] = sorted(set(publish))
        if not broadcast:
            entry["broadcast"] = False
        if subscribe:
            entry["subscribe"] = sorted(set(subscribe))
        if admin:
            entry["admin"] = True
        raw[name] = entry if len(entry) > 1 else entry["password"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(raw, out, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def parse(text: str) -> dict[str, User]:
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("users file must be a JSON object of name -> password hash")
    users = {}
    for name, value in raw.items():
        if isinstance(value, str):
            users[name] = User(name, value)
        elif isinstance(value, dict) and isinstance(value.get("password"), str):
            rooms = tuple(str(r) for r in value.get("rooms", []))
            publish = value.get("publish")
            broadcast = value.get("broadcast", True)
            subscribe = value.get("subscribe", [])
            admin = value.get("admin", False)
            if not (publish is None or isinstance(publish, list)) or not isinstance(
                broadcast, bool
            ):
                raise ValueError(f"users file: bad publish rules for {name!r}")
            if not isinstance(subscribe, list):
                raise ValueError(f"users file: subscribe of {name!r} must be a list")
            if not isinstance(admin, bool):
                raise ValueError(f"users file: admin of {name!r} must be true or false")
            users[name] = User(
                name,
                value["password"],
                rooms,
                None if publish is None else tuple(str(r) for r in publish),
                broadcast,
                tuple(str(p) for p in subscribe),
                admin,
            )
        else:
            raise ValueError(f"users file: bad entry for {name!r}")
    return users
