"""Memory beyond the context budget: a running summary of the turns the window left behind.

When a conversation's window moves forward (`context.trim_window`), the turns it drops
are folded into the conversation's running summary by the model, in the background, and
the summary is stored as the conversation's `memory` setting. The prompt carries it in
the system message, so it changes only when the window moves (and once more when the
new summary lands), and Mistral's prefix cache keeps working in between. A failed call
keeps the previous summary; the next trim folds in everything since it. The summary
holds only its own conversation's turns.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.store import Store
from bot.summaries import Summarizer, SummaryFailed
from bot.types import ConversationKey

log = logging.getLogger("teambot.memory")

MAX_ROWS = 2000  # the most turns one update reads (the newest, if a backlog built up)
MAX_CHARS = 3000  # a summary longer than asked for (~600 tokens) is cut: it rides every prompt
SetSetting = Callable[[ConversationKey, str, str | None], Awaitable[None]]


@dataclass(frozen=True)
class Memory:
    text: str = ""
    upto: int = 0  # conversation position up to which the summary covers the turns

    @classmethod
    def loads(cls, raw: str | None) -> Memory:
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(str(data["text"]), int(data["upto"]))
        except (ValueError, KeyError, TypeError):
            return cls()

    def dumps(self) -> str:
        return json.dumps({"text": self.text, "upto": self.upto}, ensure_ascii=False)


class Remembering:
    def __init__(self, summarizer: Summarizer, store: Store, set_setting: SetSetting) -> None:
        self.summarizer = summarizer
        self.store = store
        self.set_setting = set_setting
        self._tasks: dict[ConversationKey, asyncio.Task[None]] = {}

    def moved(self, key: ConversationKey, raw: str | None, old_start: int, new_start: int) -> None:
        """The window of `key` moved from `old_start` to `new_start`: fold in what left."""
        if key in self._tasks:  # the running update reads up to its own start; next trim
            return  # picks up the rest
        task = asyncio.create_task(self._update(key, Memory.loads(raw), old_start, new_start))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def _update(
        self, key: ConversationKey, memory: Memory, old_start: int, new_start: int
    ) -> None:
        # After a failure the summary lags behind the window: start where it stopped.
        start = memory.upto + 1 if memory.text else old_start
        rows = await self.store.messages(str(key), from_id=start, to_id=new_start - 1)
        rows = [row for row in rows if row.position < new_start][-MAX_ROWS:]
        if not rows:
            return
        try:
            text = await self.summarizer.memory(memory.text, rows, key=key)
        except SummaryFailed as error:
            log.warning("memory of %s not updated (kept the previous one): %s", key, error)
            return
        if len(text) > MAX_CHARS:
            text = text[: MAX_CHARS - 1] + "…"
        await self.set_setting(key, "memory", Memory(text, new_start - 1).dumps())

    async def idle(self) -> None:
        """Wait for the updates under way (tests, shutdown)."""
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await self.idle()
