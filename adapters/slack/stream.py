"""Slack's native chat streaming (startStream / appendStream / stopStream) for one reply.

Only rendered text that can no longer change is appended (see `render.stable_prefix`),
so what streamed is always a prefix of the final text. Every method reports failure
instead of raising; the shared delivery then finishes the message with ordinary edits.
The scheduler pays for each call from the budgets `SlackSurface.scopes` names.
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
        self.handle: str | None = None  # the streaming message's ts, once started
        self.shown = ""  # rendered text the message shows
        self.failed = False

    async def start(self, text: str) -> bool:
        rendered = neutralise(stable_prefix(text))
        if self.failed or not rendered.strip():
            return False
        try:
            self.handle = await self.api.start_stream(
                self.channel, self.thread_ts, rendered, self.user, self.team
            )
        except SlackApiError as exc:
            log.info("native streaming unavailable in %s: %s", self.channel, error_code(exc))
            self.failed = True
            return False
        self.shown = rendered
        return True

    async def append(self, text: str) -> bool | None:
        """Append what is new: True if sent, None if nothing to send now, False if broken."""
        rendered = neutralise(stable_prefix(text))
        if not rendered.startswith(self.shown):
            return False
        extra = rendered[len(self.shown) :]
        if not extra or self.handle is None:
            return None
        try:
            await self.api.append_stream(self.channel, self.handle, extra)
        except SlackApiError as exc:
            log.info("stream append failed (%s); switching to edits", error_code(exc))
            return False
        self.shown = rendered
        return True

    async def finish(self, final: str) -> bool:
        """Stop with the rest of `final`; False when the message must be finished by edits."""
        rendered = neutralise(final)
        if not rendered.startswith(self.shown):
            return False
        if await self._stop(rendered[len(self.shown) :]):
            self.shown = rendered
            return True
        return False

    async def abandon(self) -> None:
        """Stop streaming as is (best effort): the message becomes an ordinary one."""
        await self._stop("")

    async def _stop(self, extra: str) -> bool:
        self.failed = True
        if self.handle is None:
            return False
        try:
            await self.api.stop_stream(self.channel, self.handle, extra)
        except SlackApiError as exc:
            log.info("stream stop failed (%s); editing the message instead", error_code(exc))
            return False
        return True
