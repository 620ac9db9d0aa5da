"""One streamed reply: the text it should show, what users already see, and the next request.

A `ReplyStream` never decides *when* to write; the `Pacer` does (see pacer.py). It only says
how urgent its next update is and, when allowed, makes exactly one request.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.text import split_markdown

MESSAGE_LIMIT = 2000


class Priority(enum.IntEnum):
    FINAL = 0
    FIRST = 1
    OVERFLOW = 2
    GROW = 3


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes


class Target(Protocol):
    """Where a reply's messages go: a channel, or an interaction's follow-ups."""

    bucket: str
    counts_global: bool
    typing: Callable[[], Awaitable[None]] | None

    async def send(self, content: str, previous: Any, files: list[Attachment]) -> Any: ...

    async def edit(self, handle: Any, content: str, files: list[Attachment]) -> Any: ...


def render(text: str) -> list[str]:
    chunks = split_markdown(text, MESSAGE_LIMIT) if text else []
    return [c for c in chunks if c.strip()] or ([text[:MESSAGE_LIMIT]] if text.strip() else [])


class ReplyStream:
    """One answer on its way to users: what it should show and what they already see."""

    def __init__(
        self, target: Target, prefix: str, clock: Callable[[], float], notify: Callable[[], None]
    ) -> None:
        self._clock = clock
        self._notify = notify
        self.target = target
        self.prefix = prefix
        self.text = ""
        self.final = False
        self.files: list[Attachment] = []
        self.handles: list[Any] = []
        self.shown: list[str] = []
        self.files_sent = False
        self.version = 0
        self.dirty = bool(prefix)
        self.since = 0.0
        self.inflight = False
        self.requests = 0
        self.closed = asyncio.Event()

    @property
    def display(self) -> str:
        return self.prefix + self.text

    def append(self, text: str) -> None:
        if text:
            self.text += text
            self._changed()

    def finish(self, text: str, files: list[Attachment] | None = None) -> None:
        """The complete text; it replaces whatever was streamed."""
        self.text = text
        self.files = list(files or [])
        self.final = True
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        # Only a change of state needs the pacer; more text for an already pending update
        # is picked up when that update is made.
        if not self.dirty or self.final:
            self.dirty = True
            self.since = self._clock()
            self._notify()

    def priority(self) -> Priority | None:
        if self.inflight or not self.dirty or self.closed.is_set():
            return None
        if self.final:
            return Priority.FINAL
        if not self.handles:
            return Priority.FIRST if self.display.strip() else None
        if len(self.display) > MESSAGE_LIMIT * len(self.handles):
            return Priority.OVERFLOW
        return Priority.GROW

    def _next(self, chunks: list[str]) -> int | None:
        """The part to write next: while streaming a new part first, else the first stale one."""
        if not self.final and len(chunks) > len(self.handles):
            return len(self.handles)
        for i, chunk in enumerate(chunks):
            if i >= len(self.handles) or chunk != self.shown[i]:
                return i
        if self.files and not self.files_sent and chunks:
            return len(chunks) - 1
        return None

    async def step(self) -> None:
        """Make one request that brings what users see closer to `display`."""
        version = self.version
        chunks = render(self.display)
        index = self._next(chunks)
        if index is not None:
            await self._write(index, chunks)
        if version == self.version and self._next(chunks) is None:
            self.dirty = False
            if self.final:
                self.closed.set()

    async def _write(self, i: int, chunks: list[str]) -> None:
        self.requests += 1
        last = self.final and i == len(chunks) - 1
        files = self.files if last and not self.files_sent else []
        if i >= len(self.handles):
            previous = self.handles[-1] if self.handles else None
            self.handles.append(await self.target.send(chunks[i], previous, files))
            self.shown.append(chunks[i])
        else:
            edited = await self.target.edit(self.handles[i], chunks[i], files)
            self.handles[i] = edited if edited is not None else self.handles[i]
            self.shown[i] = chunks[i]
        self.files_sent = self.files_sent or bool(files)

    def abandon(self) -> None:
        self.closed.set()

    async def wait(self) -> None:
        await self.closed.wait()
