"""Slack's native chat streaming (startStream / appendStream / stopStream) for one reply.

Only rendered text that can no longer change is appended (see `render.stable_prefix`),
so what streamed is always a prefix of the final text. Every method reports failure
instead of raising; the writer then finishes the message with ordinary edits.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from adapters.slack.api import SlackApi, error_code
from adapters.slack.render import neutralise, stable_prefix

log = logging.getLogger("teambot.slack")


class NativeStream:
    def __init__(self, api: SlackApi, channel: str, thread_ts: str, user: str, team: str) -> None:
        self.api = api
        self.channel = channel
        self.thread_ts = thread_ts
        self.user = user
        self.team = team
        self.ts = ""  # the streaming message, once started
        self.sent = ""  # rendered text the message shows
        self.failed = False

    async def start(self, text: str) -> bool:
        rendered = neutralise(stable_prefix(text))
        if self.failed or not rendered.strip():
            return False
        # Keep a start/stop token back so that a started stream can always be stopped.
        if not self.api.budgets.stream_edges.try_take(keep=1):
            return False
        try:
            self.ts = await self.api.start_stream(
                self.channel, self.thread_ts, rendered, self.user, self.team
            )
        except SlackApiError as exc:
            log.info("native streaming unavailable in %s: %s", self.channel, error_code(exc))
            self.failed = True
            return False
        self.sent = rendered
        return True

    async def append(self, text: str) -> bool | None:
        """Append what is new: True if sent, None if nothing to send now, False if broken."""
        rendered = neutralise(stable_prefix(text))
        if not rendered.startswith(self.sent):
            return False
        extra = rendered[len(self.sent) :]
        if not extra or not self.api.budgets.stream_append.try_take():
            return None
        try:
            await self.api.append_stream(self.channel, self.ts, extra)
        except SlackApiError as exc:
            log.info("stream append failed (%s); switching to edits", error_code(exc))
            return False
        self.sent = rendered
        return True

    async def finish(self, final: str) -> bool:
        """Stop with the rest of `final`; False when the message must be finished by edits."""
        rendered = neutralise(final)
        if not rendered.startswith(self.sent):
            return False
        if await self._stop(rendered[len(self.sent) :]):
            self.sent = rendered
            return True
        return False

    async def abandon(self) -> None:
        """Stop streaming as is (best effort): the message becomes an ordinary one."""
        await self._stop("")

    async def _stop(self, extra: str) -> bool:
        self.failed = True
        try:
            await self.api.stop_stream(self.channel, self.ts, extra)
        except SlackApiError as exc:
            log.info("stream stop failed (%s); editing the message instead", error_code(exc))
            return False
        return True
