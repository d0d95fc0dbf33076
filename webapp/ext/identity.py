"""Who is on the other end of a socket, and which rooms they may receive from."""

from __future__ import annotations

from dataclasses import dataclass, field

USER_ROOM_PREFIX = "user:"


def user_room(name: str) -> str:
    return f"{USER_ROOM_PREFIX}{name}"


@dataclass(frozen=True)
class Viewer:
    """A logged-in user as the socket layer sees it: a name and the rooms granted."""

    name: str
    rooms: frozenset[str] = field(default_factory=frozenset)
    login_id: str | None = None  # the server-side login this socket belongs to, if any

    @property
    def own_room(self) -> str:
        return user_room(self.name)

    @property
    def granted_rooms(self) -> list[str]:
        return sorted(self.rooms - {self.own_room})

    @property
    def all_rooms(self) -> list[str]:
        return [self.own_room, *self.granted_rooms]

    def may_receive(self, room: str | None) -> bool:
        """Broadcast, its own room, and rooms it was granted; nothing else."""
        return room is None or room == self.own_room or room in self.rooms
