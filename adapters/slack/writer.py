"""Streams one reply into Slack: status, first post, paced edits, continuations, final.

Channels: the first tokens are posted as soon as the workspace's chat.update budget
can still pay for this reply's final edit; until then (and while the model thinks)
a status shows. Edits come at most once a second per message and only when enough
budget is left for the finals of every other reply in flight. Text past LIMIT goes
on in new thread messages, split by `split_markdown`; `msg_too_long` shrinks the
limit and re-splits.

DMs: Slack's native streaming (startStream/appendStream/stopStream). Any streaming
error, or an answer longer than one message, turns the stream into an ordinary
message that the edit path finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NoReturn

from slack_sdk.errors import SlackApiError

from adapters.slack.api import SlackApi, error_code
from adapters.slack.render import neutralise, quote
from adapters.slack.stream import NativeStream
from bot.text import split_markdown
from bot.types import ReplyDone, ReplyEvent, ReplyFailed, TextDelta, ThinkingDelta

log = logging.getLogger("teambot.slack")

LIMIT = 3800  # chat.update refuses ~4000 characters; leave room for the neutraliser
MIN_LIMIT = 400
INTERVAL = 1.0  # seconds between edits of one message
RETRY = 0.25  # seconds before asking the budget again after it said no
STATUS = "is thinking…"
STATUS_RENEW = 90.0  # seconds; Slack clears a status after two minutes without a message
FAILED = "Sorry, something went wrong while answering; the details are in the bot's log."
EMPTY = "_(The model returned an empty answer.)_"


@dataclass(frozen=True)
class Place:
    """Where a reply goes and who it is for."""

    channel: str
    thread_ts: str
    user_ts: str
    user: str
    team: str
    native: bool = False


class _TooLong(Exception):
    pass


class ReplyWriter:
    def __init__(self, api: SlackApi, place: Place) -> None:
        self.api = api
        self.place = place
        self.text = ""
        self.thinking = ""
        self.outcome: ReplyDone | ReplyFailed | None = None
        self.shown: list[list[str]] = []  # [ts, neutralised text] per message
        self.limit = LIMIT
        self.stream = (
            NativeStream(api, place.channel, place.thread_ts, place.user, place.team)
            if place.native
            else None
        )
        self.last_edit = 0.0
        self.reacted = False
        self._live = False
        self._wake = asyncio.Event()
        self._done = asyncio.Event()

    async def run(self, events: AsyncIterator[ReplyEvent]) -> None:
        # The reply first: its database work is queued before the status call's HTTP work.
        consumer = asyncio.create_task(self._consume(events))
        indicator = asyncio.create_task(self._indicate())
        try:
            await self._loop()
            await self._finish()
        finally:
            self._set_live(False)
            consumer.cancel()
            await indicator
            if self.reacted:
                await self.api.react(self.place.channel, self.place.user_ts, "eyes", add=False)

    async def _indicate(self) -> None:
        """A status until text shows (renewed: Slack drops it after 2 minutes), else :eyes:."""
        place = self.place
        while not self._visible():
            if not await self.api.set_status(place.channel, place.thread_ts, STATUS):
                await self.api.react(place.channel, place.user_ts, "eyes", add=True)
                self.reacted = True
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), STATUS_RENEW)

    @property
    def _streaming(self) -> bool:
        return bool(self.stream and self.stream.ts)

    def _visible(self) -> bool:
        return bool(self.shown or self._streaming or self._done.is_set())

    async def _consume(self, events: AsyncIterator[ReplyEvent]) -> None:
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    self.text += event.text
                elif isinstance(event, ThinkingDelta):
                    self.thinking += event.text
                else:
                    self.outcome = event
                self._wake.set()
        except Exception:
            log.exception("reply stream failed in %s", self.place.channel)
            self.outcome = ReplyFailed(FAILED)
        finally:
            self._done.set()
            self._wake.set()

    def _set_live(self, live: bool) -> None:
        if live != self._live:
            self.api.budgets.live += 1 if live else -1
            self._live = live

    # While the model writes

    async def _loop(self) -> None:
        while not self._done.is_set():
            if self.shown or self._streaming:
                delay = self.last_edit + INTERVAL - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._done.wait(), delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INTERVAL)
            self._wake.clear()
            if self._done.is_set() or not self.text.strip():
                continue
            acted = self.last_edit
            try:
                await self._progress()
            except _TooLong:
                continue
            if self.last_edit == acted:  # no budget yet: look again soon, not on every token
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._done.wait(), RETRY)

    async def _progress(self) -> None:
        if self._streaming:
            await self._append_stream()
        elif self.shown:
            await self._edit_live()
        elif not await self._start_stream() and self.api.budgets.can_go_live():
            self._set_live(True)
            await self._edit_live()

    async def _edit_live(self) -> None:
        chunks = self._chunks(self.text)
        for i, chunk in enumerate(chunks):
            if i >= len(self.shown):
                await self._post(chunk)
            elif self.shown[i][1] != neutralise(chunk):
                if i < len(chunks) - 1:
                    await self._edit(i, chunk, paid=False)
                elif self.api.budgets.try_interim():
                    await self._edit(i, chunk, paid=True)

    def _chunks(self, text: str) -> list[str]:
        return split_markdown(text, self.limit) or [EMPTY]

    async def _post(self, chunk: str) -> None:
        try:
            ts = await self.api.post(self.place.channel, self.place.thread_ts, chunk)
        except SlackApiError as exc:
            self._shrink_on_too_long(exc, chunk)
        self.shown.append([ts, neutralise(chunk)])
        self.last_edit = time.monotonic()

    async def _edit(self, index: int, chunk: str, *, paid: bool) -> None:
        try:
            await self.api.update(self.place.channel, self.shown[index][0], chunk, paid=paid)
        except SlackApiError as exc:
            self._shrink_on_too_long(exc, chunk)
        self.shown[index][1] = neutralise(chunk)
        self.last_edit = time.monotonic()

    def _shrink_on_too_long(self, exc: SlackApiError, chunk: str) -> NoReturn:
        if error_code(exc) != "msg_too_long" or self.limit <= MIN_LIMIT:
            raise exc
        self.limit = max(MIN_LIMIT, int(min(self.limit, len(chunk)) * 0.75))
        log.info("msg_too_long at %d chars; continuing in messages of %d", len(chunk), self.limit)
        raise _TooLong from exc

    # Native streaming (DMs)

    async def _start_stream(self) -> bool:
        if self.stream is None or self.stream.failed or len(self.text) > self.limit:
            return False
        if not await self.stream.start(self.text):
            return False
        self.last_edit = time.monotonic()
        return True

    async def _append_stream(self) -> None:
        assert self.stream is not None
        sent = await self.stream.append(self.text) if len(self.text) <= self.limit else False
        if sent:
            self.last_edit = time.monotonic()
        elif sent is False:
            await self.stream.abandon()
            self._stream_to_edits()

    def _stream_to_edits(self) -> None:
        """The streamed message becomes the first message of the edit path."""
        assert self.stream is not None
        self.shown = [[self.stream.ts, self.stream.sent]]
        self.stream = None
        self._set_live(True)

    # When the answer is complete

    async def _finish(self) -> None:
        outcome = self.outcome
        if outcome is None:  # already answered earlier: the engine yields nothing
            if not self.reacted:
                await self.api.set_status(self.place.channel, self.place.thread_ts, "")
            return
        final = self._final_text(outcome)
        if self._streaming:
            assert self.stream is not None
            if len(final) <= self.limit and await self.stream.finish(final):
                return await self._post_thinking(outcome)
            if not self.stream.failed:
                await self.stream.abandon()
            self._stream_to_edits()
        for _ in range(8):
            try:
                await self._sync(final)
                break
            except _TooLong:
                continue
        await self._post_thinking(outcome)

    def _final_text(self, outcome: ReplyDone | ReplyFailed) -> str:
        if isinstance(outcome, ReplyFailed):
            return f"{self.text}\n\n_{outcome.notice}_" if self.text.strip() else outcome.notice
        text = outcome.text or self.text
        if outcome.cut_off and outcome.notice:
            text = f"{text}\n\n_{outcome.notice}_"
        return text if text.strip() else EMPTY

    async def _sync(self, final: str) -> None:
        chunks = self._chunks(final)
        for i, chunk in enumerate(chunks):
            if i >= len(self.shown):
                await self._post(chunk)
            elif self.shown[i][1] != neutralise(chunk):
                await self._edit(i, chunk, paid=False)
        for ts, _ in self.shown[len(chunks) :]:
            with contextlib.suppress(SlackApiError):
                await self.api.client.chat_delete(channel=self.place.channel, ts=ts)
        del self.shown[len(chunks) :]

    async def _post_thinking(self, outcome: ReplyDone | ReplyFailed) -> None:
        if not isinstance(outcome, ReplyDone) or not outcome.show_thinking:
            return
        if not outcome.thinking.strip():
            return
        for chunk in split_markdown("**Thinking**\n" + quote(outcome.thinking), self.limit):
            await self.api.post(self.place.channel, self.place.thread_ts, chunk)
