"""Summaries: of a span of messages (`summarize`, digests) and of turns leaving the window.

A span is numbered message by message ("[12] Dec 6 14:03 Ana: …"), cut into chunks that
fit the context budget, summarised chunk by chunk and, when there was more than one,
combined. The model cites messages by number; the numbers become permalinks afterwards,
so every link in a summary is real and none can ping. Every call is recorded in usage as
kind "summary".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from bot import tokens
from bot.accounting import Accounts
from bot.errors import ModelError
from bot.limits import Limits
from bot.model import AnswerChunk, Finished, ModelClient, ModelRequest
from bot.store import Store, StoredMessage
from bot.types import ConversationKey, Usage

SUMMARY_TOKENS = 1500  # output budget of one summary call
MEMORY_TOKENS = 600
LINE_OVERHEAD = 22  # tokens a message's number, time and name add (each digit is one)
TEXT_MAX = 2000  # characters of one message a summary reads

SPAN_GUIDE = (
    "You summarise a team chat for someone who missed it. Each message is numbered, like "
    "[12]. Write Markdown with these sections, leaving out any that would be empty: "
    "**Topics**, **Decisions**, **Open questions**, **Action items** (each with its owner's "
    "name in bold). Cite the key messages by number in square brackets, like [12] or [3, 7]. "
    "Write names as they appear, never as @mentions. Be brief: under 250 words. Use the "
    "language most messages are written in."
)
COMBINE_GUIDE = (
    "You are given summaries of consecutive parts of one team chat. Merge them into one "
    "summary with the same sections (**Topics**, **Decisions**, **Open questions**, "
    "**Action items**), keeping the message numbers in square brackets exactly as they are. "
    "Under 300 words."
)
MEMORY_GUIDE = (
    "Below is the running summary of a conversation, then messages that are leaving the "
    "assistant's context. Write the updated summary: keep facts, names, numbers, decisions, "
    "preferences and open questions later turns may need; drop small talk and greetings. "
    "Under 250 words, plain sentences, no preamble."
)
_CITATION = re.compile(r"\[(\d{1,6}(?:\s*,\s*\d{1,6})*)\](?!\()")


class SummaryFailed(Exception):
    """The model could not summarise; the message is one sentence for people."""


@dataclass
class Summary:
    text: str  # Markdown, citations already links
    messages: int
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0  # what its calls' usage records say they cost


Link = Callable[[StoredMessage], str | None]


class Summarizer:
    def __init__(
        self, model: ModelClient, store: Store, accounts: Accounts, context_tokens: int
    ) -> None:
        self.model = model
        self.store = store
        self.accounts = accounts
        # Room for a chunk: the budget minus the guide and the answer.
        self.chunk_tokens = max(2000, context_tokens - SUMMARY_TOKENS - 1000)
        self.limits: Limits | None = None  # spending limits, checked before every call

    async def span(
        self,
        rows: Sequence[StoredMessage],
        *,
        key: ConversationKey,
        user_id: str,
        timezone: str,
        link: Link,
    ) -> Summary:
        """Summarise `rows` (oldest first) for `user_id`, asked in `key`."""
        zone = ZoneInfo(timezone)
        lines = [numbered(n, row, zone) for n, row in enumerate(rows, 1)]
        summary = Summary("", len(rows))
        parts = []
        for chunk in chunks(lines, [row.tokens for row in rows], self.chunk_tokens):
            parts.append(await self._call(SPAN_GUIDE, chunk, SUMMARY_TOKENS, key, user_id, summary))
        text = parts[0]
        if len(parts) > 1:
            joined = "\n\n---\n\n".join(parts)
            text = await self._call(COMBINE_GUIDE, joined, SUMMARY_TOKENS, key, user_id, summary)
        summary.text = cite(text, rows, link)
        return summary

    async def memory(
        self, previous: str, rows: Sequence[StoredMessage], *, key: ConversationKey
    ) -> str:
        """The running summary with `rows` folded in (raises SummaryFailed)."""
        lines = [f"{row.author_name or row.role}: {clip(row.text)}" for row in rows]
        body = f"Running summary:\n{previous or '(none yet)'}\n\nMessages:\n" + "\n".join(lines)
        return await self._call(MEMORY_GUIDE, body, MEMORY_TOKENS, key, "", Summary("", 0))

    async def _call(
        self,
        guide: str,
        body: str,
        max_tokens: int,
        key: ConversationKey,
        user_id: str,
        summary: Summary,
    ) -> str:
        request = ModelRequest(
            [{"role": "system", "content": guide}, {"role": "user", "content": body}],
            reasoning=False,
            max_tokens=max_tokens,
        )
        grant = None
        if self.limits is not None and await self.limits.active():  # else no count needed
            prompt = await tokens.count_async(guide + body)
            grant = await self.limits.grant(key, user_id, prompt, max_tokens, False)
            if grant.refusal:
                raise SummaryFailed(grant.refusal)
            request = ModelRequest(request.messages, False, grant.max_tokens)
        answer: list[str] = []
        usage = Usage()
        try:
            async for event in self.model.stream(request):
                if isinstance(event, AnswerChunk):
                    answer.append(event.text)
                elif isinstance(event, Finished):
                    usage = event.usage
        except ModelError as error:
            raise SummaryFailed(error.user_message) from error
        finally:
            summary.calls += 1
            summary.usage = Usage(
                summary.usage.prompt_tokens + usage.prompt_tokens,
                summary.usage.completion_tokens + usage.completion_tokens,
            )
            record = self.accounts.usage_record(key, user_id, usage, 0.0, "ok", kind="summary")
            summary.cost += record.cost_usd
            await self.store.record_usage(record)
            if self.limits is not None:
                await self.limits.release(grant)
        text = "".join(answer).strip()
        if not text:
            raise SummaryFailed("The model returned an empty summary.")
        return text


def footer(what: str, rows: Sequence[StoredMessage], summary: Summary, timezone: str) -> str:
    """ "_Messages here since your last message · Dec 06 09:02 – 11:40 · 38 messages · …_"."""
    zone = ZoneInfo(timezone)
    first, last = (datetime.fromtimestamp(r.created_at, zone) for r in (rows[0], rows[-1]))
    until = last.strftime("%H:%M" if first.date() == last.date() else "%b %d %H:%M")
    calls = f"{summary.calls} model call" + ("s" if summary.calls != 1 else "")
    count = f"{summary.messages} message" + ("s" if summary.messages != 1 else "")
    span = f"{first.strftime('%b %d %H:%M')} – {until}"
    return f"_Said {what} · {span} · {count} · {calls} · ${summary.cost:.4f}_"


def clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1] + "…"


def numbered(n: int, row: StoredMessage, zone: ZoneInfo) -> str:
    when = datetime.fromtimestamp(row.created_at, zone).strftime("%b %d %H:%M")
    who = "teambot" if row.role == "assistant" else row.author_name or row.author_id
    return f"[{n}] {when} {who}: {clip(row.text) or '(no text)'}"


def chunks(lines: Sequence[str], sizes: Sequence[int], budget: int) -> list[str]:
    """`lines` joined into as few chunks as fit `budget` tokens each (a line never splits)."""
    found: list[str] = []
    current: list[str] = []
    used = 0
    for line, size in zip(lines, sizes, strict=True):
        cost = size + LINE_OVERHEAD
        if current and used + cost > budget:
            found.append("\n".join(current))
            current, used = [], 0
        current.append(line)
        used += cost
    if current:
        found.append("\n".join(current))
    return found


def cite(text: str, rows: Sequence[StoredMessage], link: Link) -> str:
    """Message numbers as links: "[3, 7]" becomes "[3](…) [7](…)"; unknown numbers stay."""

    def swap(match: re.Match[str]) -> str:
        shown = []
        for part in match.group(1).split(","):
            number = int(part)
            url = link(rows[number - 1]) if 1 <= number <= len(rows) else None
            shown.append(f"[{number}]({url})" if url else f"[{number}]")
        return " ".join(shown)

    return _CITATION.sub(swap, text)
