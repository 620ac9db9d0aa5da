"""Pytest fixtures and helpers for Discord adapter tests (import them into a test module)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from bot.engine import Engine
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.discord.server import FakeDiscord


@pytest_asyncio.fixture
async def dc() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with Discord's rate limits enforced."""
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.close()


@pytest_asyncio.fixture
async def bot(engine: Engine, dc: FakeDiscord) -> AsyncIterator[Running]:
    running = await start_adapter(engine, dc)
    yield running
    await running.stop()


async def answer_to(bot: Running, fake: FakeDiscord, message: dict[str, Any]) -> str:
    """The complete text of the bot's (possibly multi-part) answer once every reply landed."""

    def landed() -> str | None:
        parts = fake.replies_to(message["id"])
        if parts and bot.adapter.pacer.idle():
            return "\n".join(p.content for p in parts)
        return None

    return str(await fake.wait_until(landed, what=f"an answer to {message['content']!r}"))


async def settle() -> None:
    """Let events that have no visible effect (recorded chatter) reach the adapter."""
    await asyncio.sleep(0.2)
