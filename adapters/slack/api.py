"""The Web API calls replies make (the shared scheduler paces them; see delivery.py)."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import markdown_message

log = logging.getLogger("teambot.slack")


# What Slack answers when it refuses a token itself; the variable that holds each token.
TOKEN_REFUSED = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})
BOT_TOKEN, APP_TOKEN = "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"
NAME = "Slack"


def error_code(exc: SlackApiError) -> str:
    try:
        return str(exc.response.get("error", "")) or "unknown"
    except AttributeError:
        return "unknown"


class SlackApi:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, thread_ts: str | None, markdown: str) -> str:
        args: dict[str, Any] = markdown_message(markdown)
        if thread_ts:
            args["thread_ts"] = thread_ts
        response = await self.client.chat_postMessage(
            channel=channel, unfurl_links=False, unfurl_media=False, **args
        )
        return str(response["ts"])

    async def update(self, channel: str, ts: str, markdown: str) -> None:
        await self.client.chat_update(channel=channel, ts=ts, **markdown_message(markdown))

    async def start_stream(
        self, channel: str, thread_ts: str, markdown: str, user: str, team: str
    ) -> str:
        response = await self.client.chat_startStream(
            channel=channel,
            thread_ts=thread_ts,
            markdown_text=markdown,
            recipient_user_id=user,
            recipient_team_id=team,
        )
        return str(response["ts"])

    async def append_stream(self, channel: str, ts: str, markdown: str) -> None:
        await self.client.chat_appendStream(channel=channel, ts=ts, markdown_text=markdown)

    async def stop_stream(self, channel: str, ts: str, markdown: str) -> None:
        extra: dict[str, Any] = {"markdown_text": markdown} if markdown else {}
        await self.client.chat_stopStream(channel=channel, ts=ts, **extra)

    async def set_status(self, channel: str, thread_ts: str, status: str) -> bool:
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread_ts, status=status
            )
        except SlackApiError as exc:
            log.info("status unavailable in %s: %s", channel, error_code(exc))
            return False
        return True

    async def ephemeral(self, channel: str, thread_ts: str, user: str, markdown: str) -> bool:
        """A message only `user` sees; False (logged) where Slack won't allow it."""
        args: dict[str, Any] = markdown_message(markdown)
        if thread_ts:
            args["thread_ts"] = thread_ts
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, **args)
        except SlackApiError as exc:
            log.info("could not tell %s privately in %s: %s", user, channel, error_code(exc))
            return False
        return True

    async def delete(self, channel: str, ts: str) -> None:
        await self.client.chat_delete(channel=channel, ts=ts)

    async def react(self, channel: str, ts: str, name: str, *, add: bool) -> None:
        method = self.client.reactions_add if add else self.client.reactions_remove
        try:
            await method(channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            log.info("reaction %s failed in %s: %s", name, channel, error_code(exc))
