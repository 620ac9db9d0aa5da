"""Pytest fixtures for Slack tests; import them into a test module to use them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bot.engine import Engine
from tests.fakes.slack.harness import Harness
from tests.fakes.slack.server import FakeSlack


@pytest_asyncio.fixture(name="fake_slack")
async def fake_slack_fixture() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout=1.0) as fake:
        fake.add_channel("C1")
        fake.add_channel("C2")
        fake.add_channel("D1", "im")
        yield fake


@pytest_asyncio.fixture(name="slack")
async def slack_fixture(fake_slack: FakeSlack, engine: Engine) -> AsyncIterator[Harness]:
    harness = Harness(fake_slack, engine)
    await harness.start()
    yield harness
    await harness.stop()


@pytest_asyncio.fixture(name="slack_http")
async def slack_http_fixture(fake_slack: FakeSlack, engine: Engine) -> AsyncIterator[Harness]:
    harness = Harness(fake_slack, engine, mode="http")
    await harness.start()
    yield harness
    await harness.stop()
