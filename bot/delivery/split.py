"""Splitting a reply into messages of the platform's size, code fences repaired.

Chat platforms cap message length (Discord 2000 characters, Slack about 4000 per
update). A split must not leave a code block open in one message and unlabelled in
the next, so a fence cut across messages is closed and re-opened with its language.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
# Room kept for the "\n```" that closes a fence cut at the end of a chunk.
_CLOSE_RESERVE = 8


def open_fence(text: str) -> str | None:
    """The opening line of the code fence still open at the end of `text`, if any."""
    marker = ""
    opener = ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        fence, info = match.group(1), match.group(2).strip()
        if not marker:
            # A backtick fence's info string may not contain backticks (CommonMark).
            if fence[0] == "`" and "`" in info:
                continue
            marker, opener = fence, line.strip()
        elif fence[0] == marker[0] and len(fence) >= len(marker) and not info:
            marker = opener = ""
    return opener or None


def _cut(body: str, start: int, end: int) -> tuple[int, int]:
    """Where to end this chunk and where the next starts: paragraph, line, word, or hard."""
    window = body[start:end]
    # A boundary in the first third would waste most of the message; skip it.
    floor = len(window) // 3
    for separator in ("\n\n", "\n", " "):
        index = window.rfind(separator)
        if index > floor:
            return start + index, start + index + len(separator)
    return end, end


def split_markdown(text: str, limit: int) -> list[str]:
    """Split `text` into chunks of at most `limit` characters that each render on their own."""
    if limit <= _CLOSE_RESERVE * 2:
        raise ValueError("limit too small to split Markdown safely")
    chunks: list[str] = []
    reopen = ""
    rest = text
    while True:
        body = reopen + rest
        if len(body) <= limit:
            if body.strip():
                chunks.append(body.rstrip())
            return chunks
        budget = limit - _CLOSE_RESERVE
        start = min(len(reopen) + 1, budget)
        end_piece, start_rest = _cut(body, start, budget)
        piece = body[:end_piece].rstrip()
        fence = open_fence(piece)
        if fence:
            piece += "\n" + _closing(fence)
            reopen = fence + "\n"
        else:
            reopen = ""
        if piece.strip():
            chunks.append(piece)
        rest = body[start_rest:]


def _closing(opener: str) -> str:
    marker = re.match(r"(`{3,}|~{3,})", opener.strip())
    return marker.group(1) if marker else "```"


def messages(text: str, limit: int) -> list[str]:
    """`text` as the messages that show it: split, blank parts dropped, never empty if
    `text` has something to show."""
    chunks = [c for c in split_markdown(text, limit) if c.strip()] if text.strip() else []
    return chunks or ([text[:limit]] if text.strip() else [])
