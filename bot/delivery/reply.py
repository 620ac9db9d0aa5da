"""One reply on its way to people: what it should show, what they already see, the next step.

A `Reply` never decides *when* to make a request; the `Scheduler` does. It says what
its next step is and how urgent, and when granted makes exactly that one request
through its `Surface`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from bot.delivery.compose import Controls, View
from bot.delivery.plan import Kind, Priority, Step, next_step
from bot.delivery.split import messages
from bot.delivery.surface import Refused, Surface, TooLong
from bot.types import (
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolActivity,
)

log = logging.getLogger("teambot.delivery")

MIN_LIMIT = 400  # never split finer than this, however often "too long" comes back
SHRINK = 0.75  # after "too long", messages this much shorter than the refused one


class Reply:
    def __init__(
        self,
        surface: Surface,
        notes: Sequence[str],
        clock: Callable[[], float],
        notify: Callable[[], None],
    ) -> None:
        self.surface = surface
        self.style = surface.style
        self.view = View(notes=list(notes))
        self.limit = self.style.limit
        self.stream = surface.stream
        self.streaming = False  # a native stream is open
        self.handles: list[Any] = []
        self.shown: list[str] = []
        self.marks: list[Controls | None] = []  # the controls each shown message carries
        self.answer_id = 0  # the stored answer's row id, once the engine said (ReplyDone)
        self.files_sent = False
        self.owes: tuple[str, ...] = ()  # budgets its final update will spend (while live)
        self.error = ""  # why the platform stopped this reply, if it did
        self.refusal: Refused | None = None  # the platform's refusal that stopped it
        self._clock = clock
        self._notify = notify
        self.version = 0
        self.dirty = bool(notes)
        self.since = clock()
        self.inflight = False
        self.last_write = -math.inf
        self.indicated_at = -math.inf
        self.indicating = surface.indicate_every > 0
        self.working = False  # the model is at work on it (the indicator may show)
        self.closed = asyncio.Event()
        self._wanted: tuple[tuple[int, int], list[str]] = ((-1, 0), [])

    # What the engine says

    def feed(self, event: ReplyEvent) -> None:
        if isinstance(event, Started):
            # Only now is there something to be working on; in a burst this also keeps the
            # indicators' requests behind the model requests.
            self.working = True
            self.view.question = event.question or self.view.question
            self._notify()
            return
        if isinstance(event, TextDelta):
            if not event.text:
                return
            self.view.answer += event.text
        elif isinstance(event, ThinkingDelta):
            self.view.thinking += event.text
            return  # thinking shows only with the final answer
        elif isinstance(event, ToolActivity):
            self.view.activity = event.text
            if not self.style.activity_in_text:
                if event.text and not self.visible:
                    self.indicated_at = -math.inf  # show it in the indicator now
                    self._notify()
                return
        else:
            if isinstance(event, ReplyDone):
                self.answer_id = event.answer
            self.view.finish(event)
        self._changed()

    def fail(self, notice: str) -> None:
        self.feed(ReplyFailed(notice))

    def say(self, text: str) -> None:
        """Show `text` as the complete reply (a command's answer, a note)."""
        self.feed(ReplyDone(text))

    def _changed(self) -> None:
        self.version += 1
        # Only a change of state needs the scheduler; more text for an already pending
        # update is picked up when that update is made.
        if not self.dirty or self.view.final:
            self.dirty = True
            self.since = self._clock()
            self._notify()

    # What people should see

    @property
    def visible(self) -> bool:
        return bool(self.handles) or self.streaming

    def wanted(self) -> list[str]:
        """The messages the reply should show now (split once per change of text)."""
        if self._wanted[0] != (self.version, self.limit):
            parts = messages(self.view.text(self.style), self.limit)
            extra = self.view.thinking_messages(self.style)
            self._wanted = ((self.version, self.limit), parts + messages(extra, self.limit))
        return self._wanted[1]

    def next_step(self) -> Step | None:
        """The one request that brings what people see closer to the view, if any."""
        if self.inflight or self.closed.is_set() or not self.dirty:
            return None
        step = self._stream_step() or self.without_stream()
        if step is None:  # people already see everything there is
            self.dirty = False
            if self.view.final:
                self.close()
        return step

    def without_stream(self) -> Step | None:
        """The step posts and edits would take now (when a native stream can't start)."""
        files = () if self.files_sent else self.view.files(self.style)
        return next_step(
            self.shown,
            self.wanted(),
            final=self.view.final,
            files=files,
            controls=self.view.controls(self.style),
            marks=self.marks,
        )

    def _stream_step(self) -> Step | None:
        stream = self.stream
        if stream is None or stream.failed or not (self.streaming or not self.handles):
            return None
        text = self.view.text(self.style)
        fits = len(text) <= self.limit
        if not self.streaming:
            if self.view.final or not fits or not text.strip():
                return None
            return Step(Kind.START, Priority.FIRST, text=text)
        if self.view.final:
            controls = self.view.controls(self.style)
            kind = Kind.STOP if fits else Kind.ABANDON
            return Step(kind, Priority.FINAL, text=text, controls=controls)
        if not fits:
            return Step(Kind.ABANDON, Priority.OVERFLOW)
        return Step(Kind.APPEND, Priority.GROW, text=text)

    def indicator_due(self) -> float | None:
        """When the working indicator should be shown (again), or None."""
        if not (self.working and self.indicating) or self.visible or self.closed.is_set():
            return None
        if self.inflight:
            return None
        return self.indicated_at + self.surface.indicate_every

    # Making the request the scheduler granted

    async def perform(self, step: Step) -> None:
        version = self.version
        try:
            await self._perform(step)
        except TooLong as exc:
            if self.limit <= MIN_LIMIT:
                detail = "too long even in short messages"
                raise Refused(
                    exc.code, platform=exc.platform, channel=exc.channel, detail=detail
                ) from exc
            self.limit = max(MIN_LIMIT, int(min(self.limit, len(step.text)) * SHRINK))
            if not self.visible:
                self.owes = ()  # its first text did not land: not live yet
            log.info("too long at %d characters; splitting at %d", len(step.text), self.limit)
            return
        if step.kind is Kind.INDICATE:
            return
        self.last_write = self._clock()
        if version == self.version and step.kind in (Kind.START, Kind.APPEND):
            # The stream shows all it can of this text; wait for more.
            self.dirty = False

    async def _perform(self, step: Step) -> None:
        surface = self.surface
        if step.kind is Kind.INDICATE:
            self.indicated_at = self._clock()
            self.indicating = await surface.indicate(self.view.activity)
        elif step.kind is Kind.POST:
            self.handles.append(await surface.post(step.text, step.files, **self._controls(step)))
            self.shown.append(step.text)
            self.marks.append(step.controls)
            self._sent(step)
        elif step.kind is Kind.EDIT:
            handle = self.handles[step.index]
            edited = await surface.edit(handle, step.text, step.files, **self._controls(step))
            self.handles[step.index] = handle if edited is None else edited
            self.shown[step.index] = step.text
            self.marks[step.index] = step.controls
            self._sent(step)
        elif step.kind is Kind.DELETE:
            await surface.delete(self.handles[step.index])
            del self.handles[step.index], self.shown[step.index], self.marks[step.index]
        else:
            await self._stream_request(step)

    def _controls(self, step: Step) -> dict[str, Controls | None]:
        """The `controls` keyword, for surfaces with buttons only (the rest never see it)."""
        return {"controls": step.controls} if self.style.buttons else {}

    def _sent(self, step: Step) -> None:
        self.files_sent = self.files_sent or bool(step.files)
        if not self.view.final and not self.owes:
            self.owes = tuple(self.surface.scopes(Kind.EDIT))  # live: it owes a final edit

    async def _stream_request(self, step: Step) -> None:
        assert self.stream is not None
        stream = self.stream
        if step.kind is Kind.START:
            self.streaming = await stream.start(step.text)
            if not self.streaming:
                self.owes = ()  # not live after all
            return
        if step.kind is Kind.APPEND and await stream.append(step.text) is not False:
            return
        if step.kind is Kind.STOP and await stream.finish(step.text, **self._controls(step)):
            self.streaming = False
            self.handles, self.shown = [stream.handle], messages(step.text, self.limit)[:1]
            self.marks = [step.controls if self.style.buttons else None]
            self.owes = ()
            return
        if step.kind is not Kind.STOP and not stream.failed:
            await stream.abandon()
        self._stream_to_messages()

    def _stream_to_messages(self) -> None:
        """The streamed message becomes the first message of ordinary posts and edits."""
        assert self.stream is not None
        self.streaming = False
        if self.stream.handle is not None:
            self.handles, self.shown = [self.stream.handle], [self.stream.shown]
            self.marks = [None]
            self.owes = tuple(self.surface.scopes(Kind.EDIT))
        self.stream = None

    def close(self) -> None:
        self.owes = ()
        self.dirty = False
        self.closed.set()

    def stop(self, error: str, refusal: Refused | None = None) -> None:
        """The platform refused this reply for good (`refusal`, when it said so) or a
        request failed unexpectedly: show nothing more."""
        self.error = error
        self.refusal = refusal
        self.close()
