"""What the fake Slack remembers, shaped for assertions about what people would see."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Anything Slack would turn into a notification: special mentions, user-group and user pings.
PING = re.compile(
    r"<!(?:channel|here|everyone)\b|<!subteam\^|<@[UWB][A-Z0-9]*>|(?<![\w`])@(?:channel|here|everyone)\b"
)


def visible_text(text: str, blocks: list[dict[str, Any]] | None) -> str:
    """The text a person reads: markdown/section blocks win over the `text` fallback."""
    parts: list[str] = []
    for block in blocks or []:
        if block.get("type") == "markdown":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "section":
            inner = block.get("text") or {}
            parts.append(str(inner.get("text", "")))
    return "\n".join(parts) if parts else text


@dataclass
class Posted:
    """One message in the fake workspace (people's and the bot's)."""

    channel: str
    ts: str
    user: str
    text: str
    created: float
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    updates: list[tuple[float, str]] = field(default_factory=list)
    streaming: bool = False
    streamed: bool = False
    stream_mode: str | None = None  # "markdown_text" or "chunks", fixed by the first content
    recipient: str = ""  # who sees a channel stream live (recipient_user_id)
    stopped_by_user: bool = False  # the recipient pressed Slack's stop on the stream
    deleted: bool = False
    is_bot: bool = False

    @property
    def visible(self) -> str:
        return visible_text(self.text, self.blocks)

    @property
    def last_change(self) -> float:
        return self.updates[-1][0] if self.updates else self.created


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float
    ok: bool
    error: str = ""
    status: int = 200


@dataclass
class Delivery:
    """One envelope or HTTP event delivery attempt."""

    envelope_id: str
    kind: str
    payload: dict[str, Any]
    sent: float
    attempt: int = 0
    acked: float | None = None
