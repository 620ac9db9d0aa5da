"""Who can read a Slack conversation: conversations.info, cached for a few minutes.

Tools decide what an asker may read by the visibility recorded here, so a cached
answer is kept only briefly: a channel made private stops counting as public within
MAX_AGE_S. An event's own `channel_type` is fresher than the cache and wins.
"""

from __future__ import annotations

import asyncio
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.types import DM, PRIVATE, PUBLIC, Place

log = logging.getLogger("teambot.slack")

MAX_AGE_S = 600.0
DIRECT = ("im", "mpim")


class Channels:
    def __init__(self, client: AsyncWebClient, max_age: float = MAX_AGE_S) -> None:
        self._client = client
        self._max_age = max_age
        self._cache: dict[str, tuple[Place | None, float]] = {}
        self._pending: dict[str, asyncio.Future[Place | None]] = {}

    async def place(self, channel: str, channel_type: str = "") -> Place | None:
        """The channel's place; None when Slack would not say (then it counts as private
        to its own conversations)."""
        if channel_type in DIRECT or (not channel_type and channel.startswith("D")):
            return Place(channel, "", DM)
        cached = self._cache.get(channel)
        if cached is None or time.monotonic() - cached[1] > self._max_age:
            pending = self._pending.get(channel)
            if pending is None:
                pending = self._pending[channel] = asyncio.ensure_future(self._lookup(channel))
                pending.add_done_callback(lambda _: self._pending.pop(channel, None))
            found = await asyncio.shield(pending)
        else:
            found = cached[0]
        if found is not None and channel_type:
            fresh = PRIVATE if channel_type == "group" else PUBLIC
            found = Place(found.id, found.name, fresh)
        return found

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
