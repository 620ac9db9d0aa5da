"""The console adapter behind `teambot chat`: a terminal conversation with the engine.

Every `teambot chat` on the same database continues one conversation until `/reset`.
With piped stdin it answers each line in turn and returns at end of input.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from typing import TextIO

from bot.engine import Engine
from bot.types import (
    Author,
    ConversationKey,
    Message,
    ReplyDone,
    ReplyFailed,
    TextDelta,
    ThinkingDelta,
)

CONSOLE_KEY = ConversationKey("console", "", "default")
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
        self.author = Author("console", _user_name())

    async def run(self) -> None:
        if self.interactive:
            self._err("teambot chat: type a message, /help for commands, /quit to leave.")
        while True:
            if self.interactive:
                self._err("you> ", end="")
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                name, _, args = line[1:].partition(" ")
                if name.lower() in QUIT:
                    return
                result = await self.engine.command(
                    CONSOLE_KEY, self.author, name, args, is_group=False
                )
                self._out(result.text + "\n")
                continue
            await self._answer(line)

    async def _answer(self, text: str) -> None:
        message = Message(
            key=CONSOLE_KEY,
            id=f"console-{time.time_ns()}",
            author=self.author,
            text=text,
            is_group=False,
        )
        thinking: list[str] = []
        async for event in self.engine.reply(message):
            if isinstance(event, TextDelta):
                self._out(event.text)
            elif isinstance(event, ThinkingDelta):
                thinking.append(event.text)
            elif isinstance(event, ReplyDone):
                if event.cut_off:
                    self._out(f"\n{event.notice}")
                self._out("\n")
                if event.show_thinking and event.thinking:
                    self._err(f"--- thinking ---\n{event.thinking}\n--- end of thinking ---")
            elif isinstance(event, ReplyFailed):
                self._out(event.notice + "\n")

    def _out(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _err(self, text: str, end: str = "\n") -> None:
        self.stderr.write(text + end)
        self.stderr.flush()


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "you"
