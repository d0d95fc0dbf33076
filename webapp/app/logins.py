"""Server-side logins: a random id per login, kept in Redis with the session's lifetime.

The session cookie only carries the login id. Logout deletes it, expiry drops it, and
from then on the cookie is worth nothing, even if someone kept a copy; every web
server disconnects the sockets opened under it within a second.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import redis

KEY_PREFIX = "streambridge:login:"


class LoginRegistry:
    def __init__(self, client: redis.Redis, lifetime_s: int) -> None:
        self.redis = client
        self.lifetime_s = lifetime_s

    def create(self, user: str) -> str:
        login_id = secrets.token_urlsafe(24)
        self.redis.set(KEY_PREFIX + login_id, user, ex=self.lifetime_s)
        return login_id

    def user_of(self, login_id: str) -> str | None:
        return self.redis.get(KEY_PREFIX + login_id)

    def end(self, login_id: str) -> None:
        self.redis.delete(KEY_PREFIX + login_id)

    def alive(self, login_ids: Iterable[str]) -> set[str]:
        """Which of these logins still exist (one round trip)."""
        ids = list(dict.fromkeys(login_ids))
        if not ids:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for login_id in ids:
            pipe.exists(KEY_PREFIX + login_id)
        return {i for i, ok in zip(ids, pipe.execute(), strict=True) if ok}
