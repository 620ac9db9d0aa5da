"""Who can read a Slack conversation: conversations.info, cached for a few minutes.

Tools decide what an asker may read by the visibility recorded here, so a cached answer
is kept only briefly: a channel made private stops counting as public within MAX_AGE_S.
An event's own `channel_type` is fresher than any cache and wins; then only the
channel's name is looked up, in the background. An answer never waits long for a
lookup (WAIT_S), and lookups stay under conversations.info's limit: a channel that could
not be looked up counts as private to its own conversations until it can.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.types import DM, PRIVATE, PUBLIC, Place

log = logging.getLogger("teambot.slack")

MAX_AGE_S = 600.0
WAIT_S = 1.0  # the longest a question waits for a lookup
LOOKUPS_PER_MINUTE = 40  # conversations.info allows 50 a minute per workspace
DIRECT = ("im", "mpim")


class Channels:
    def __init__(self, client: AsyncWebClient, max_age: float = MAX_AGE_S) -> None:
        self._client = client
        self._max_age = max_age
        self._cache: dict[str, tuple[Place | None, float]] = {}
        self._pending: dict[str, asyncio.Future[Place | None]] = {}
        self._recent: deque[float] = deque()  # when the last minute's lookups started

    async def place(self, channel: str, channel_type: str = "") -> Place | None:
        """The channel's place; None when it is not known in time (then it counts as
        private to its own conversations)."""
        if channel_type in DIRECT or (not channel_type and channel.startswith("D")):
            return Place(channel, "", DM)
        cached = self._cache.get(channel)
        fresh = cached is not None and time.monotonic() - cached[1] <= self._max_age
        known = found = cached[0] if cached is not None else None
        if not fresh:
            lookup = self._lookup_soon(channel)
            found = await self._wait(lookup) if lookup is not None else None
        if channel_type:  # the visibility is known; a stale name beats none
            named = found or known
            name = named.name if named is not None else ""
            return Place(channel, name, PRIVATE if channel_type == "group" else PUBLIC)
        return found

    @staticmethod
    async def _wait(lookup: asyncio.Future[Place | None]) -> Place | None:
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), WAIT_S)
        except TimeoutError:
            return None

    def _lookup_soon(self, channel: str) -> asyncio.Future[Place | None] | None:
        """The lookup of `channel` under way, or a new one if the budget allows."""
        pending = self._pending.get(channel)
        if pending is not None:
            return pending
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 60:
            self._recent.popleft()
        if len(self._recent) >= LOOKUPS_PER_MINUTE:
            return None
        self._recent.append(now)
        pending = self._pending[channel] = asyncio.ensure_future(self._lookup(channel))
        pending.add_done_callback(lambda _: self._pending.pop(channel, None))
        return pending

    async def _lookup(self, channel: str) -> Place | None:
        try:
            response = await self._client.conversations_info(channel=channel)
        except SlackApiError as exc:
            log.info("conversations.info failed for %s: %s", channel, exc.response.get("error"))
            return None  # not cached: asked again next time
        info = response.get("channel") or {}
        if info.get("is_im") or info.get("is_mpim"):
            place = Place(channel, "", DM)
        else:
            private = bool(info.get("is_private")) or bool(info.get("is_group"))
            place = Place(channel, str(info.get("name") or ""), PRIVATE if private else PUBLIC)
        self._cache[channel] = (place, time.monotonic())
        return place
