"""Pytest fixture for a running FakeMistral; import it into a conftest to share it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fakes.mistral import FakeMistral


@pytest_asyncio.fixture
async def fake_mistral() -> AsyncIterator[FakeMistral]:
    """A FakeMistral on a fresh loopback port that accepts any API key."""
    async with FakeMistral() as fake:
        yield fake
