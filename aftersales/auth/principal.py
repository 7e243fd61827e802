"""Who is acting: a person, an API token, or the system itself."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    kind: str  # "user", "token" or "system"
    id: int | None
    name: str
    role: str
    teams: tuple[str, ...] = field(default=())

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def is_person(self) -> bool:
        return self.kind == "user"


SYSTEM = Principal(kind="system", id=None, name="system", role="system")


def carrier_actor(carrier: str) -> Principal:
    return Principal(kind="carrier", id=None, name=carrier, role="system")
