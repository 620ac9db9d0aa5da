"""Slack user groups as roles: who is in which group, from usergroups.list.

TEAMBOT_ALLOWED_ROLES takes Slack user-group ids (S…). One usergroups.list call with
`include_users` answers for the whole workspace; it is cached for a few minutes and
made only when that setting is non-empty. A failed lookup (for instance without the
`usergroups:read` scope) leaves the last answer in place, or no groups at all: a role
allow list then lets fewer people in, never more.
"""

from __future__ import annotations

import asyncio
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import error_code

log = logging.getLogger("teambot.slack")

MAX_AGE_S = 300.0
RETRY_S = 60.0  # after a failed lookup


class Groups:
    def __init__(self, client: AsyncWebClient, max_age: float = MAX_AGE_S) -> None:
        self._client = client
        self._max_age = max_age
        self._members: dict[str, tuple[str, ...]] = {}  # user id -> group ids
        self._at: float | None = None  # when the cached answer was fetched
        self._pending: asyncio.Future[None] | None = None

    async def of(self, user: str) -> tuple[str, ...]:
        """The ids of the user groups `user` is a member of."""
        if self._at is None or time.monotonic() - self._at >= self._max_age:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._lookup())
            pending = self._pending
            try:
                await asyncio.shield(pending)
            finally:
                if pending.done() and self._pending is pending:
                    self._pending = None
        return self._members.get(user, ())

    async def _lookup(self) -> None:
        try:
            response = await self._client.usergroups_list(include_users=True)
        except SlackApiError as exc:
            log.warning(
                "usergroups.list failed (%s): TEAMBOT_ALLOWED_ROLES needs the usergroups:read "
                "scope; reinstall the app from slack-manifest.yml",
                error_code(exc),
            )
            # Keep the last answer (or none) and ask again in a minute, not per message.
            self._at = time.monotonic() - self._max_age + min(RETRY_S, self._max_age)
            return
        members: dict[str, list[str]] = {}
        for group in response.get("usergroups") or ():
            for user in group.get("users") or ():
                members.setdefault(str(user), []).append(str(group.get("id") or ""))
        self._members = {user: tuple(ids) for user, ids in members.items()}
        self._at = time.monotonic()
