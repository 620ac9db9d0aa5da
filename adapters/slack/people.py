"""Display names for user ids, looked up with users.info and cached for a few hours; the
same lookup says who is a workspace admin or owner (teambot's admins on Slack)."""

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
# Admin rights matter more than names: a cached answer older than this is used once
# more while users.info is asked again in the background.
ADMIN_MAX_AGE_S = 15 * 60


class Names:
    def __init__(
        self,
        client: AsyncWebClient,
        max_age: float = MAX_AGE_S,
        admin_max_age: float = ADMIN_MAX_AGE_S,
    ) -> None:
        self._client = client
        self._max_age = max_age
        self._admin_max_age = admin_max_age
        self.cache: dict[str, tuple[str, float]] = {}  # user id -> (name, when looked up)
        self.admins: dict[str, bool] = {}  # user id -> is_admin or is_owner, same lookup
        self._pending: dict[str, asyncio.Future[str]] = {}

    def prefetch(self, user: str, max_age: float | None = None) -> None:
        """Start looking a name up now, so it is ready by the time it is needed."""
        if user and user not in self._pending and not self._fresh(user, max_age):
            future = self._pending[user] = asyncio.ensure_future(self._lookup(user))
            future.add_done_callback(lambda _: self._pending.pop(user, None))

    def _fresh(self, user: str, max_age: float | None = None) -> bool:
        cached = self.cache.get(user)
        limit = self._max_age if max_age is None else max_age
        return cached is not None and time.monotonic() - cached[1] < limit

    async def is_admin(self, user: str) -> bool:
        """Whether users.info says `user` is a workspace admin or owner (False when it
        could not tell)."""
        await self.get(user)
        self.prefetch(user, self._admin_max_age)  # refreshes a stale answer behind
        return self.admins.get(user, False)

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
        self.admins[user] = bool(info.get("is_admin") or info.get("is_owner"))
        self.cache[user] = (name, time.monotonic())
        return name
