"""The console adapter behind `teambot chat`: a terminal conversation with the engine.

Every `teambot chat` on the same database continues one conversation until `/reset`.
With piped stdin it answers each line in turn and returns at end of input. Replies go
through the shared delivery like on any platform; a terminal can only append, so its
surface is a native stream that prints what is new.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import BinaryIO, TextIO

from bot.delivery import Controls, File, Limit, Scheduler, Style, Thinking, deliver, say
from bot.delivery.plan import Kind
from bot.engine import Engine
from bot.text import decode
from bot.types import DM, Author, ConversationKey, Message, Place, ReplyDone, ReplyEvent

# A terminal takes text as fast as it comes; nothing is split or paced.
STYLE = Style(limit=10_000_000, emphasis="", thinking=Thinking.NONE)


def _unlimited(scope: str) -> Limit:
    raise KeyError(scope)  # the console's requests spend no budget


class Printer:
    """A terminal as a streamed message: it prints what is new, and can't take text back."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.handle: object | None = None
        self.shown = ""
        self.failed = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def start(self, text: str) -> bool:
        self.handle = self
        self._write(text)
        self.shown = text
        return True

    async def append(self, text: str) -> bool | None:
        if not text.startswith(self.shown):
            return False
        self._write(text[len(self.shown) :])
        self.shown = text
        return True

    async def finish(self, text: str, *, controls: Controls | None = None) -> bool:
        if not text.startswith(self.shown):
            return False
        self._write(text[len(self.shown) :] + "\n")
        self.failed = True  # finished: later text goes out as new messages
        self.shown = text
        return True

    async def abandon(self) -> None:
        self._write("\n")
        self.failed = True


class Terminal:
    """The console's surface: lines printed to stdout."""

    style = STYLE
    edit_interval = 0.0
    indicate_every = 0.0

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.stream: Printer | None = Printer(out)

    def scopes(self, kind: Kind) -> Sequence[str]:
        return ()

    async def post(
        self, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> object:
        """A terminal has no buttons: `controls` are ignored."""
        self.out.write(text + "\n")
        self.out.flush()
        return text

    async def edit(
        self, handle: object, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> object:
        # Printed text can't change: print the corrected text below it.
        return await self.post("\n" + text, files)

    async def delete(self, handle: object) -> None:
        """Printed text stays printed."""

    async def indicate(self, activity: str) -> bool:
        return False

    async def settle(self, shown: bool) -> None:
        """Nothing to clean up in a terminal."""


CONSOLE_KEY = ConversationKey("console", "", "default")
CONSOLE_PLACE = Place("default", "console", DM)
QUIT = ("quit", "exit")
STOPPED = "(Stopped: you pressed Ctrl-C.)"


class LineReader:
    """Lines of input as bytes, read by a daemon thread so a blocked read never holds
    up the exit; b"" is the end of input."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.lines: asyncio.Queue[bytes] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="teambot-console-input", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._lines():
                self._loop.call_soon_threadsafe(self.lines.put_nowait, line)
        except (OSError, ValueError):
            pass  # input closed under us: the same as its end
        with contextlib.suppress(RuntimeError):  # the loop may be gone already
            self._loop.call_soon_threadsafe(self.lines.put_nowait, b"")

    def _lines(self) -> Iterator[bytes]:
        try:
            fd = self.source.fileno()
        except (OSError, ValueError, AttributeError):
            yield from iter(self.source.readline, b"")
            return
        # Straight from the descriptor: no buffer lock for the interpreter's exit to wait on.
        pending = b""
        while chunk := os.read(fd, 65536):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line + b"\n"
        if pending:
            yield pending


class ConsoleAdapter:
    def __init__(
        self,
        engine: Engine,
        stdin: BinaryIO = sys.stdin.buffer,
        stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr,
    ) -> None:
        self.engine = engine
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.interactive = stdin.isatty()
        # Whoever runs `teambot chat` has the shell and the database: the operator, an
        # admin whom the access rules (bot/access.py) never refuse.
        self.author = Author("console", _user_name(), platform_admin=True)
        self.pacer = Scheduler(_unlimited)
        self.pacer.journal = engine.journal
        self._interrupted = asyncio.Event()
        # While an answer is written: the engine's replies that were running before it.
        self._before: set[asyncio.Task[None]] | None = None
        self._stopping = False  # Ctrl-C was pressed during the answer

    async def run(self) -> None:
        if self.interactive:
            self._err("teambot chat: type a message, /help for commands, /quit to leave.")
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._on_interrupt)
        try:
            await self._converse(LineReader(self.stdin))
        finally:
            if self.interactive:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
            await self.pacer.close()

    async def _converse(self, reader: LineReader) -> None:
        while True:
            if self.interactive:
                self._err("you> ", end="")
            raw = await self._next_line(reader)
            if not raw:  # end of input, or Ctrl-C at the prompt
                if self.interactive:
                    self._err("")
                return
            line = decode(raw).strip()
            if not line:
                continue
            if line.startswith("/"):
                name, _, args = line[1:].partition(" ")
                if name.lower() in QUIT:
                    return
                result = await self.engine.command(
                    CONSOLE_KEY, self.author, name, args, is_group=False, place=CONSOLE_PLACE
                )
                await say(self.pacer, Terminal(self.stdout), result.text)
                continue
            await self._answer(line)

    async def _next_line(self, reader: LineReader) -> bytes:
        """The next line, or b"" at the end of input or when Ctrl-C is pressed."""
        self._interrupted.clear()
        line = asyncio.ensure_future(reader.lines.get())
        interrupt = asyncio.ensure_future(self._interrupted.wait())
        await asyncio.wait({line, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        interrupt.cancel()
        if line.done():
            return line.result()
        line.cancel()
        return b""

    def _on_interrupt(self) -> None:
        """Ctrl-C: stop the answer being written (it is stored as cut off), or leave."""
        if self._before is None:
            self._interrupted.set()
            return
        self._stopping = True
        self._stop_reply()

    def _stop_reply(self) -> None:
        """Cancel the reply's task once: a second cancel would hit it while it stores."""
        assert self._before is not None
        for task in _reply_tasks(self.engine) - self._before:
            task.cancel()
            self._before.add(task)

    async def _answer(self, text: str) -> None:
        message = Message(
            key=CONSOLE_KEY,
            id=f"console-{time.time_ns()}",
            author=self.author,
            text=text,
            is_group=False,
            place=CONSOLE_PLACE,
        )
        reply = await deliver(self.pacer, Terminal(self.stdout), self._events(message))
        view = reply.view
        if view.show_thinking and view.thinking:
            self._err(f"--- thinking ---\n{view.thinking}\n--- end of thinking ---")

    async def _events(self, message: Message) -> AsyncIterator[ReplyEvent]:
        """The engine's reply, stoppable with Ctrl-C while it is written."""
        self._before, self._stopping = set(_reply_tasks(self.engine)), False
        try:
            async for event in self.engine.reply(message):
                if self._stopping:  # pressed before the reply's task had started
                    self._stop_reply()
                if isinstance(event, ReplyDone) and event.cut_off and self._stopping:
                    event = dataclasses.replace(event, notice=STOPPED)
                yield event
        finally:
            self._before = None

    def _err(self, text: str, end: str = "\n") -> None:
        self.stderr.write(text + end)
        self.stderr.flush()


def _reply_tasks(engine: Engine) -> set[asyncio.Task[None]]:
    """The engine's replies in progress (the console has one at a time); cancelling one
    stores what it wrote as cut off, as a shutdown does."""
    return engine._tasks


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "you"
