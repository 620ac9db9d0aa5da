"""Shared fixtures: a running fake Mistral and real engines on real SQLite files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from bot.config import Settings
from bot.engine import Engine
from bot.mistral import MistralClient
from bot.store.sqlite import SQLiteStore
from tests.fakes.mistral import FakeMistral
from tests.fakes.mistral_fixture import fake_mistral

__all__ = ["engine", "fake_mistral", "make_engine"]

EngineFactory = Callable[..., Awaitable[Engine]]


def test_settings(fake: FakeMistral, db_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mistral_api_key": "test-mistral-key-123456",
        "mistral_base_url": fake.base_url,
        "database_url": f"sqlite:///{db_path}",
    }
    values.update(overrides)
    return Settings(**values)


@pytest_asyncio.fixture
async def make_engine(fake_mistral: FakeMistral, tmp_path: Path) -> AsyncIterator[EngineFactory]:
    """Build engines on a SQLite file (default: one per test); restart = build another."""
    engines: list[Engine] = []

    async def factory(db_path: Path | None = None, **overrides: Any) -> Engine:
        sources = overrides.pop("tool_sources", ())
        settings = test_settings(fake_mistral, db_path or tmp_path / "teambot.db", **overrides)
        store = await SQLiteStore.open(settings.database_url.removeprefix("sqlite:///"))
        model = MistralClient(
            api_key=settings.mistral_api_key,
            base_url=settings.mistral_base_url,
            model=settings.model,
            retry_budget=1.0,
        )
        engine = Engine(settings, store, model, tool_sources=sources)
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.aclose()


@pytest_asyncio.fixture
async def engine(make_engine: EngineFactory) -> Engine:
    return await make_engine()
