"""Slack's agent view: suggested prompts, thread titles and the channel being viewed.

New apps get the manifest's `agent_view`: opening the Messages tab is `app_home_opened`
(tab "messages") and the viewed channel comes in `app_context_changed`. Apps still on the
legacy assistant view get `assistant_thread_started` / `assistant_thread_context_changed`
instead; both are handled the same way. The viewed channel is only a hint for the
asker's own questions: what it lets them read is still their scope (bot/tools).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.slack.api import SlackApi

PROMPTS_TITLE = "Try asking"
TITLE_CHARS = 60
REMEMBERED = 10_000  # people whose viewed channel is kept in memory
# "summarize this channel", "can you summarise the channel?", "recap this channel"...
SUMMARIZE_THIS = re.compile(
    r"\b(summar(y|i[sz]e)|recap|catch me up( on)?)\b.{0,20}\b(this|the|current) channel\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Viewing:
    """The channel a person is looking at next to the agent."""

    channel: str
    team: str


def title(question: str) -> str:
    """A thread title from its first question: one line, at most TITLE_CHARS."""
    line = " ".join(question.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def asks_for_channel_summary(text: str) -> bool:
    return SUMMARIZE_THIS.search(text) is not None


def _from_entities(context: dict[str, Any]) -> Viewing | None:
    for entity in context.get("entities") or ():
        value = str(entity.get("value") or "")
        if str(entity.get("type") or "").endswith("channel_id") and value:
            return Viewing(value, str(entity.get("team_id") or ""))
    return None


def viewing_of(event: dict[str, Any]) -> tuple[str, Viewing | None]:
    """(user, viewed channel) from any of the four agent events; the channel is None when
    the person is not looking at one (or at a DM, which is never a context)."""
    thread = event.get("assistant_thread") or {}
    user = str(thread.get("user_id") or event.get("user") or "")
    context = thread.get("context") or event.get("context") or {}
    found = _from_entities(context)
    if found is None and context.get("channel_id"):
        found = Viewing(str(context["channel_id"]), str(context.get("team_id") or ""))
    if found is not None and found.channel.startswith("D"):
        found = None
    return user, found


class Agent:
    def __init__(self, api: SlackApi, prompts: Sequence[str]) -> None:
        self.api = api
        self.prompts = tuple(prompts)
        self._viewing: OrderedDict[str, Viewing | None] = OrderedDict()
        self._untitled: set[tuple[str, str]] = set()  # assistant threads without a title
        self._prompted: set[str] = set()  # Messages tabs that have their prompts
        self._tasks: set[asyncio.Task[None]] = set()

    def viewing(self, user: str) -> Viewing | None:
        return self._viewing.get(user)

    def note(self, event: dict[str, Any]) -> None:
        user, found = viewing_of(event)
        if user:
            self._viewing[user] = found
            self._viewing.move_to_end(user)
            if len(self._viewing) > REMEMBERED:
                self._viewing.popitem(last=False)

    async def thread_started(self, event: dict[str, Any]) -> None:
        """A new assistant thread: remember what it views, offer the prompts."""
        self.note(event)
        thread = event.get("assistant_thread") or {}
        channel, ts = str(thread.get("channel_id") or ""), str(thread.get("thread_ts") or "")
        if channel and ts:
            self._untitled.add((channel, ts))
            await self.api.suggest(channel, ts, self.prompts, PROMPTS_TITLE)

    async def home_opened(self, event: dict[str, Any]) -> None:
        """The agent view's Messages tab: prompts pinned atop it (once per process),
        without a thread, as Slack asks for agent apps."""
        channel = str(event.get("channel") or "")
        if event.get("tab") == "messages" and channel and channel not in self._prompted:
            self._prompted.add(channel)
            await self.api.suggest(channel, None, self.prompts, PROMPTS_TITLE)

    def title_soon(self, channel: str, thread_ts: str, root: bool, question: str) -> None:
        """`titled` in the background: the answer does not wait for it."""
        task = asyncio.create_task(self.titled(channel, thread_ts, root, question))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def titled(self, channel: str, thread_ts: str, root: bool, question: str) -> None:
        """Title an agent thread after its first question: a new assistant thread, or (in
        the agent view, where each DM message starts a thread) a top-level DM message."""
        key = (channel, thread_ts)
        if not question.strip() or not (root or key in self._untitled):
            return
        self._untitled.discard(key)
        await self.api.set_title(channel, thread_ts, title(question))
