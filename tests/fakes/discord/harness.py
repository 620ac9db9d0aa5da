"""Run the real DiscordAdapter (real discord.py client) against a FakeDiscord."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.discord import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from bot.engine import Engine
from tests.fakes.discord.server import BOT_TOKEN, FakeDiscord


def settings_for(fake: FakeDiscord, **overrides: Any) -> DiscordSettings:
    """The adapter is configured the way an operator would: through DiscordSettings.

    Threads per question are off unless a test asks for them (`threads=True`), so tests
    of channel behaviour find answers replying to their questions in the channel.
    """
    values: dict[str, Any] = {
        "bot_token": BOT_TOKEN,
        "api_base_url": fake.api_base_url,
        "gateway_url": fake.gateway_url,
        "threads": False,
    }
    values.update(overrides)
    return DiscordSettings(**values)


class Running:
    """An adapter task plus helpers to stop it cleanly."""

    def __init__(self, adapter: DiscordAdapter, task: asyncio.Task[None]) -> None:
        self.adapter = adapter
        self.task = task

    async def stop(self) -> None:
        """Close the adapter; `run()` must then return on its own, without an error."""
        await self.adapter.close()
        await asyncio.wait_for(self.task, 5)


async def start_adapter(engine: Engine, fake: FakeDiscord, **overrides: Any) -> Running:
    """Start the adapter and return once its gateway session is up.

    discord.py holds on_ready back ~2 s waiting for more guilds; events are handled before
    that, in order, so waiting for the fake's session is enough and keeps tests fast.
    """
    gateway = fake.gateway
    identifies = gateway.identifies - gateway.closed_4014
    settings = settings_for(fake, **overrides)
    adapter = DiscordAdapter(engine, settings)
    task = asyncio.create_task(adapter.run())

    def up() -> bool:
        if gateway.identifies - gateway.closed_4014 <= identifies:
            return False
        if settings.shard_ids:  # only some shards: the others belong to other processes
            return all(
                s in gateway.sessions and gateway.sessions[s].live for s in settings.shard_ids
            )
        return gateway.connected.is_set()

    async def session_up() -> None:
        await fake.wait_until(up, what="a gateway session")

    ready = asyncio.create_task(session_up())
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()  # surface the adapter's startup error
        raise AssertionError("the Discord adapter did not become ready")
    return Running(adapter, task)
