"""Display names for user ids, looked up once with users.info and cached."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("teambot.slack")


class Names:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self.cache: dict[str, str] = {}
        self._pending: dict[str, asyncio.Future[str]] = {}

    def prefetch(self, user: str) -> None:
        """Start looking a name up now, so it is ready by the time it is needed."""
        if user and user not in self.cache and user not in self._pending:
            self._pending[user] = asyncio.ensure_future(self._lookup(user))

    async def get(self, user: str) -> str:
        if user in self.cache:
            return self.cache[user]
        self.prefetch(user)
        pending = self._pending[user]
        try:
            return await asyncio.shield(pending)
        finally:
            self._pending.pop(user, None)

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
        self.cache[user] = name
        return name
