"""The Web API calls replies make (the shared scheduler paces them; see delivery.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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

    async def post(
        self,
        channel: str,
        thread_ts: str | None,
        markdown: str,
        extra: list[dict[str, Any]] | None = None,
    ) -> str:
        args: dict[str, Any] = markdown_message(markdown, extra)
        if thread_ts:
            args["thread_ts"] = thread_ts
        response = await self.client.chat_postMessage(
            channel=channel, unfurl_links=False, unfurl_media=False, **args
        )
        return str(response["ts"])

    async def update(
        self, channel: str, ts: str, markdown: str, extra: list[dict[str, Any]] | None = None
    ) -> None:
        await self.client.chat_update(channel=channel, ts=ts, **markdown_message(markdown, extra))

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

    async def stop_stream(
        self, channel: str, ts: str, markdown: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        extra: dict[str, Any] = {"markdown_text": markdown} if markdown else {}
        if blocks:
            extra["blocks"] = blocks  # shown under the streamed text
        await self.client.chat_stopStream(channel=channel, ts=ts, **extra)

    async def set_status(
        self, channel: str, thread_ts: str, status: str, loading: Sequence[str] = ()
    ) -> bool:
        extra: dict[str, Any] = {"loading_messages": list(loading[:10])} if loading else {}
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread_ts, status=status, **extra
            )
        except SlackApiError as exc:
            log.info("status unavailable in %s: %s", channel, error_code(exc))
            return False
        return True

    async def set_title(self, channel: str, thread_ts: str, title: str) -> None:
        """An agent thread's title (best effort, logged)."""
        try:
            await self.client.assistant_threads_setTitle(
                channel_id=channel, thread_ts=thread_ts, title=title
            )
        except SlackApiError as exc:
            log.info("title unavailable in %s: %s", channel, error_code(exc))

    async def suggest(
        self, channel: str, thread_ts: str | None, prompts: Sequence[str], title: str
    ) -> None:
        """Suggested prompts (at most four) atop an agent thread or, without `thread_ts`,
        the agent view's Messages tab (best effort, logged)."""
        extra: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
        shown = [{"title": p, "message": p} for p in prompts[:4]]
        try:
            await self.client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, prompts=shown, title=title, **extra
            )
        except SlackApiError as exc:
            log.info("suggested prompts unavailable in %s: %s", channel, error_code(exc))

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
