"""Text in both directions: Slack's escaped mrkdwn in, safe Markdown blocks out.

Out: the model writes standard Markdown, which Slack renders in `markdown` blocks.
Nothing the model writes may notify anyone, so every `<!...>` (channel, here,
everyone, subteam), `<@...>` and bare `@channel`/`@here`/`@everyone` is broken with a
zero-width space: it looks the same but Slack no longer parses it as a mention.

In: Slack escapes `&`, `<`, `>` and encodes mentions and links as `<...>` tokens;
the model should read plain text with names instead.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

ZWSP = "\u200b"
_SPECIAL = re.compile(r"<([!@#])")
_BARE = re.compile(r"(?<!\w)@(channel|here|everyone)\b", re.IGNORECASE)
# A tail whose rendering may change with the next token: `<` (could become `<!`) or `@word`.
_OPEN_TAIL = re.compile(r"(<|@\w*)$")

_TOKEN = re.compile(r"<([^<>]+)>")


def neutralise(text: str) -> str:
    """Make `text` unable to ping: mentions stay readable but are no longer mentions."""
    text = _SPECIAL.sub(lambda m: "<" + ZWSP + m.group(1), text)
    return _BARE.sub(lambda m: "@" + ZWSP + m.group(1), text)


def stable_prefix(text: str) -> str:
    """The longest prefix whose rendering will not change when more text arrives."""
    match = _OPEN_TAIL.search(text[-100:])
    return text[: len(text) - len(match.group(0))] if match else text


def markdown_message(markdown: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """chat.postMessage / chat.update arguments for one rendered Markdown chunk, with
    `extra` blocks (buttons) under it."""
    safe = neutralise(markdown)
    return {"text": safe, "blocks": [{"type": "markdown", "text": safe}, *(extra or ())]}


def quote(markdown: str) -> str:
    return "\n".join("> " + line if line else ">" for line in markdown.splitlines())


def _token(inner: str, names: Mapping[str, str], bot_user_id: str) -> str:
    head, _, label = inner.partition("|")
    if head.startswith("@"):
        user = head[1:]
        return "" if user == bot_user_id else "@" + (names.get(user) or label or user)
    if head.startswith("#"):
        return "#" + (label or head[1:])
    if head.startswith("!subteam^"):
        return "@" + (label.lstrip("@") or "group")
    if head.startswith("!"):
        return "@" + (label or head[1:].split("^")[0])
    return f"{label} ({head})" if label and label != head else head


def mentioned_users(text: str) -> list[str]:
    return [m.group(1)[1:].split("|")[0] for m in _TOKEN.finditer(text) if m.group(1)[0] == "@"]


def incoming(text: str, names: Mapping[str, str], bot_user_id: str) -> str:
    """Slack message text as the model should read it: names, plain links, unescaped."""
    plain = _TOKEN.sub(lambda m: _token(m.group(1), names, bot_user_id), text)
    return html.unescape(re.sub(r"[ \t]{2,}", " ", plain)).strip()
