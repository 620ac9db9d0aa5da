"""The console adapter behind `teambot chat`: a terminal conversation with the engine.

Every `teambot chat` on the same database continues one conversation until `/reset`.
With piped stdin it answers each line in turn and returns at end of input. Replies go
through the shared delivery like on any platform; a terminal can only append, so its
surface is a native stream that prints what is new.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from bot.delivery import File, Limit, Scheduler, Style, Thinking, deliver, say
from bot.delivery.plan import Kind
from bot.engine import Engine
from bot.types import DM, Author, ConversationKey, Message, Place

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

    async def finish(self, text: str) -> bool:
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

    async def post(self, text: str, files: Sequence[File]) -> object:
        self.out.write(text + "\n")
        self.out.flush()
        return text

    async def edit(self, handle: object, text: str, files: Sequence[File]) -> object:
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


class ConsoleAdapter:
    def __init__(
        self,
        engine: Engine,
        stdin: TextIO = sys.stdin,
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

    async def run(self) -> None:
        if self.interactive:
            self._err("teambot chat: type a message, /help for commands, /quit to leave.")
        while True:
            if self.interactive:
                self._err("you> ", end="")
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                await self.pacer.close()
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                name, _, args = line[1:].partition(" ")
                if name.lower() in QUIT:
                    await self.pacer.close()
                    return
                result = await self.engine.command(
                    CONSOLE_KEY, self.author, name, args, is_group=False, place=CONSOLE_PLACE
                )
                await say(self.pacer, Terminal(self.stdout), result.text)
                continue
            await self._answer(line)

    async def _answer(self, text: str) -> None:
        message = Message(
            key=CONSOLE_KEY,
            id=f"console-{time.time_ns()}",
            author=self.author,
            text=text,
            is_group=False,
            place=CONSOLE_PLACE,
        )
        reply = await deliver(self.pacer, Terminal(self.stdout), self.engine.reply(message))
        view = reply.view
        if view.show_thinking and view.thinking:
            self._err(f"--- thinking ---\n{view.thinking}\n--- end of thinking ---")

    def _err(self, text: str, end: str = "\n") -> None:
        self.stderr.write(text + end)
        self.stderr.flush()


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "you"
