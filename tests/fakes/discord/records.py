"""What the fake remembers, so tests can assert what a Discord user would have seen."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Posted:
    """A message as users see it, with every version it went through."""

    id: str
    channel_id: str
    author_id: str
    content: str
    payload: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    history: list[tuple[float, str]] = field(default_factory=list)
    allowed_mentions: list[Any] = field(default_factory=list)
    pings: set[str] = field(default_factory=set)
    reference_id: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    deleted: bool = False
    suppress_embeds: bool = False  # posted with flag 1 << 2: links show no previews
    interaction_token: str | None = None
    ephemeral: bool = False

    @property
    def edits(self) -> int:
        return len(self.history) - 1

    @property
    def buttons(self) -> list[str]:
        """The custom ids of the message's buttons, in order."""
        rows = self.payload.get("components") or []
        return [
            b["custom_id"] for row in rows for b in row.get("components", []) if "custom_id" in b
        ]


@dataclass
class InteractionRecord:
    id: str
    token: str
    name: str
    channel_id: str
    user_id: str
    created: float = field(default_factory=time.monotonic)
    callbacks: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)
    kind: int = 2  # 2 application command, 3 message component, 5 modal submit
    message_id: str | None = None  # the message a component was clicked on
    modal: dict[str, Any] | None = None  # the modal the app answered with (type 9)
    guild_id: str | None = None
    user_install: bool = False

    @property
    def deferred_ephemeral(self) -> bool:
        return any(
            cb["type"] == 5 and (cb.get("data") or {}).get("flags", 0) & 64
            for _, cb in self.callbacks
        )


@dataclass
class RequestLog:
    at: float
    method: str
    path: str
    status: int
    port: int = 0  # the fake's port it came in on (see FakeDiscord.listen)


_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")


def pings(content: str, allowed: dict[str, Any] | None, replied_author: str | None) -> set[str]:
    """Who Discord would notify for this content (the semantics of allowed_mentions).

    Without allowed_mentions every mention type is parsed and a reply pings its author.
    """
    parse = {"everyone", "users", "roles"} if allowed is None else set(allowed.get("parse", []))
    users = set() if allowed is None else {str(u) for u in allowed.get("users", [])}
    roles = set() if allowed is None else {str(r) for r in allowed.get("roles", [])}
    out: set[str] = set()
    if "everyone" in parse:
        out |= {m for m in ("@everyone", "@here") if m in content}
    for uid in _USER.findall(content):
        if "users" in parse or uid in users:
            out.add(f"user:{uid}")
    for rid in _ROLE.findall(content):
        if "roles" in parse or rid in roles:
            out.add(f"role:{rid}")
    if replied_author and (allowed is None or allowed.get("replied_user")):
        out.add(f"user:{replied_author}")
    return out
