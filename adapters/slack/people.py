"""Display names for user ids, looked up with users.info and cached for a few hours."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("teambot.slack")


# People rename themselves; an old name is used while a fresh one is looked up.
MAX_AGE_S = 6 * 3600


class Names:
    def __init__(self, client: AsyncWebClient, max_age: float = MAX_AGE_S) -> None:
        self._client = client
        self._max_age = max_age
        self.cache: dict[str, tuple[str, float]] = {}  # user id -> (name, when looked up)
        self._pending: dict[str, asyncio.Future[str]] = {}

    def prefetch(self, user: str) -> None:
        """Start looking a name up now, so it is ready by the time it is needed."""
        if user and user not in self._pending and not self._fresh(user):
            future = self._pending[user] = asyncio.ensure_future(self._lookup(user))
            future.add_done_callback(lambda _: self._pending.pop(user, None))

    def _fresh(self, user: str) -> bool:
        cached = self.cache.get(user)
        return cached is not None and time.monotonic() - cached[1] < self._max_age

    async def get(self, user: str) -> str:
        cached = self.cache.get(user)
        if cached is not None:
            self.prefetch(user)  # refreshes a stale name in the background
            return cached[0]
        self.prefetch(user)
        return await asyncio.shield(self._pending[user])

    async def many(self, users: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(users))
        names = await asyncio.gather(*(self.get(u) for u in wanted))
        return dict(zip(wanted, names, strict=True))

    async def _lookup(self, user: str) -> str:
        try:
            response = await self._client.users_info(user=user)
        except SlackApiError as exc:
            log.info("users.info failed for %s: %s", user, exc.response.get("error"))
            return user  # not cached: try again next time
        info = response.get("user") or {}
        profile = info.get("profile") or {}
        name = str(
            profile.get("display_name") or profile.get("real_name") or info.get("name") or user
        )
        self.cache[user] = (name, time.monotonic())
        return name
