"""Wiring for Slack tests and the bench: FakeSlack + the real SlackAdapter + an engine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from adapters.slack import SlackAdapter
from adapters.slack.settings import SlackSettings
from bot.engine import Engine
from tests.fakes.slack.records import Posted
from tests.fakes.slack.server import FakeSlack


def slack_settings(fake: FakeSlack, mode: str = "socket") -> SlackSettings:
    if mode == "socket":
        return SlackSettings(
            bot_token=fake.bot_token, app_token=fake.app_token, api_base_url=fake.api_url
        )
    return SlackSettings(
        bot_token=fake.bot_token,
        signing_secret=fake.signing_secret,
        port=0,
        api_base_url=fake.api_url,
    )


class Harness:
    def __init__(self, fake: FakeSlack, engine: Engine, mode: str = "socket") -> None:
        self.fake = fake
        self.engine = engine
        self.mode = mode
        self.adapter: SlackAdapter | None = None
        self._run: asyncio.Task[None] | None = None

    async def start(self, engine: Engine | None = None) -> SlackAdapter:
        self.engine = engine or self.engine
        self.fake.mode = self.mode
        adapter = SlackAdapter(
            self.engine, slack_settings(self.fake, self.mode), host="127.0.0.1", ping_interval=2
        )
        self._run = asyncio.create_task(adapter.run())
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({ready, self._run}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if self._run.done():
            self._run.result()
        assert adapter.ready.is_set(), "adapter did not start"
        if self.mode == "http":
            self.fake.http_url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
        else:
            await self.wait_for(lambda: bool(self.fake.hub.connections), "socket connected")
        self.adapter = adapter
        return adapter

    async def stop(self) -> None:
        if self.adapter and self._run:
            await self.adapter.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._run, 10)
        self.adapter = None

    async def wait_for(
        self, predicate: Callable[[], Any], what: str = "condition", within: float = 15
    ) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def _quiet(self) -> bool:
        busy = self.adapter.busy if self.adapter else 0
        return not busy and not self.fake.hub.unacked() and not self.fake._tasks

    async def idle(self, within: float = 20) -> None:
        """Wait until every event is acked and every reply is finished."""
        deadline = time.monotonic() + within
        calm = 0
        while calm < 3:
            if time.monotonic() > deadline:
                raise AssertionError("adapter did not go idle")
            calm = calm + 1 if self._quiet() else 0
            await asyncio.sleep(0.03)

    async def reply_in(self, channel: str, thread_ts: str | None, within: float = 15) -> str:
        """Wait for the bot's answer in a thread and return what people see there."""
        await self.wait_for(lambda: self.fake.bot_messages(channel, thread_ts), "a reply", within)
        await self.idle(within)
        return self.fake.thread_text(channel, thread_ts)

    def replies(self, channel: str, thread_ts: str | None) -> list[Posted]:
        return self.fake.bot_messages(channel, thread_ts)
