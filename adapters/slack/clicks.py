"""Clicks on a reply's buttons (`block_actions`): Stop, Regenerate, 👍/👎.

Bolt acks the click first (Slack wants it within 3 seconds); the engine decides who may
do what. Each click is answered privately to the clicker (chat.postEphemeral); a
regenerated answer is written over the old one's messages (chat.update), so it takes
its place in the thread.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from adapters.slack.buttons import FEEDBACK, REGENERATE, STOP, Click
from adapters.slack.delivery import Place, SlackSurface
from adapters.slack.runtime import FAILED, Runtime
from bot.types import ReplyEvent, ReplyFailed

log = logging.getLogger("teambot.slack")

REGENERATING = "Writing a new answer in place of this one…"


class Clicks:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def handle(self, click: Click) -> None:
        try:
            await self._handle(click)
        except Exception:
            log.exception("the %s click in %s failed", click.action, click.channel)
            await self._tell(click, FAILED)

    async def _handle(self, click: Click) -> None:
        engine = self.rt.engine
        author = await self.rt.author(click.user)
        if click.action == STOP:
            await self._tell(click, await engine.stop(click.question, author))
        elif click.action == FEEDBACK:
            await self._tell(click, await engine.feedback(click.question, author, click.vote))
        elif click.action == REGENERATE:
            await self._regenerate(click, engine.regenerate(click.question, author))

    async def _regenerate(self, click: Click, events: AsyncIterator[ReplyEvent]) -> None:
        first = await anext(events, None)
        if first is None:
            return
        if isinstance(first, ReplyFailed):  # not allowed, or not now: say so, keep the answer
            await self._tell(click, first.notice)
            return
        await self._tell(click, REGENERATING)
        place = Place(click.channel, click.thread_ts, click.thread_ts, click.user, click.team)
        surface = SlackSurface(self.rt.api, place, reuse=[click.message_ts])
        await self.rt.show(_chain(first, events), surface, f"question {click.question}")

    async def _tell(self, click: Click, text: str) -> None:
        thread = click.thread_ts if click.thread_ts != click.message_ts else ""
        await self.rt.api.ephemeral(click.channel, thread, click.user, text)


async def _chain(first: ReplyEvent, rest: AsyncIterator[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
    yield first
    async for event in rest:
        yield event
