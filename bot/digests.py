"""Daily digests: at a set time each day, a channel gets the summary of its last 24 hours.

A channel's `digest` setting holds the time ("09:00", in TEAMBOT_TIMEZONE). Every
process ticks through the channels that have one; the first to claim
`digest:<channel>:<date>` in the store posts it, so there is exactly one digest per
channel per day whatever the number of processes or restarts. A bot that was down at
the time posts it when it is back, the same day. A quiet day claims and posts nothing.
The adapters say how to post into a channel (`Engine.register_poster`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.store import Store
from bot.types import ConversationKey

log = logging.getLogger("teambot.digests")

TICK_S = 30.0
CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
DEFAULT_TIME = "09:00"

Poster = Callable[[ConversationKey, str], Awaitable[None]]
Summarize = Callable[[ConversationKey, float], Awaitable[str | None]]


def parse_clock(text: str) -> str | None:
    """ "9:30" → "09:30"; None when it is not a time of day."""
    match = CLOCK.match(text.strip())
    return f"{int(match.group(1)):02d}:{match.group(2)}" if match else None


def conversation_key(raw: str) -> ConversationKey:
    platform, space, channel, thread = raw.split(":", 3)
    return ConversationKey(platform, space, channel, thread)


class Digests:
    def __init__(self, store: Store, summarize: Summarize, timezone: str) -> None:
        self.store = store
        self.summarize = summarize
        self.zone = ZoneInfo(timezone)
        self.posters: dict[str, Poster] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(time.time())
            except Exception:  # a bad tick must not end the loop
                log.exception("digest tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> int:
        """Post every digest that is due at `now` and not posted yet; how many were posted."""
        if not self.posters:
            return 0
        local = datetime.fromtimestamp(now, self.zone)
        posted = 0
        for raw, at in await self.store.settings_named("digest"):
            key = conversation_key(raw)
            poster = self.posters.get(key.platform)
            if poster is None or local.strftime("%H:%M") < at:
                continue  # another process serves that platform, or not yet
            if not await self.store.claim_event(f"digest:{raw}:{local.date().isoformat()}"):
                continue
            text = await self.summarize(key, now)
            if text is None:
                continue  # nothing happened: nothing to post
            try:
                await poster(key, text)
                posted += 1
            except Exception:
                log.exception("posting the digest of %s failed", key)
        return posted
