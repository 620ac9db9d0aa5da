"""Slack's native chat streaming (startStream / appendStream / stopStream) for one reply.

Only rendered text that can no longer change is appended (see `render.stable_prefix`),
so what streamed is always a prefix of the final text. Every method reports failure
instead of raising; the shared delivery then finishes the message with ordinary edits.
The scheduler pays for each call from the budgets `SlackSurface.scopes` names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError

from adapters.slack import buttons
from adapters.slack.api import SlackApi, error_code
from adapters.slack.render import neutralise, stable_prefix
from bot.delivery import Controls

log = logging.getLogger("teambot.slack")

USER_STOPPED = "stopped_by_user"  # the recipient stopped the stream in Slack


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
        self.on_user_stop: Callable[[], None] | None = None

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
            code = error_code(exc)
            log.info("stream append failed (%s); switching to edits", code)
            if code == USER_STOPPED and self.on_user_stop is not None:
                self.on_user_stop()  # the person pressed Slack's own stop: stop the model too
            return False
        self.shown = rendered
        return True

    async def finish(self, final: str, *, controls: Controls | None = None) -> bool:
        """Stop with the rest of `final` and the reply's buttons under it; False when the
        message must be finished by edits."""
        rendered = neutralise(final)
        if not rendered.startswith(self.shown):
            return False
        if await self._stop(rendered[len(self.shown) :], buttons.blocks(controls)):
            self.shown = rendered
            return True
        return False

    async def abandon(self) -> None:
        """Stop streaming as is (best effort): the message becomes an ordinary one."""
        await self._stop("")

    async def _stop(self, extra: str, blocks: list[dict[str, Any]] | None = None) -> bool:
        self.failed = True
        if self.handle is None:
            return False
        try:
            await self.api.stop_stream(self.channel, self.handle, extra, blocks)
        except SlackApiError as exc:
            log.info("stream stop failed (%s); editing the message instead", error_code(exc))
            return False
        return True
