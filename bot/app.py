"""Composition: settings, store, model client, engine and adapters, wired in one place.

The core knows the platforms only by the name of their settings module; each such
module (`adapters/<platform>/settings.py`) parses its own variables without importing
its platform's SDK, and builds its adapter on demand.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot import metrics, tokens
from bot.breaker import guard
from bot.config import Settings, environment, load_settings
from bot.engine import Engine
from bot.providers import endpoint, model_client
from bot.tools.loop import ToolSource

PLATFORMS = ("adapters.discord.settings", "adapters.slack.settings")


class PlatformAdapter(Protocol):
    async def run(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether it is connected to its platform now (for /healthz)."""
        ...


class Platform(Protocol):
    """What an adapter's settings module offers (see adapters/discord/settings.py)."""

    NAME: str
    NOT_CONFIGURED: str

    def load(self, env: Mapping[str, str]) -> Any: ...

    def secrets(self, settings: Any) -> list[str]: ...

    def describe(self, settings: Any) -> str: ...

    def adapter(self, engine: Engine, settings: Any) -> PlatformAdapter: ...


@dataclass(frozen=True)
class Config:
    """Everything configured: the core's settings and each configured platform's."""

    core: Settings
    platforms: dict[str, tuple[Platform, Any]] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        values = [self.core.mistral_api_key, self.core.api_key, self.core.puter_auth_token]
        for platform, settings in self.platforms.values():
            values += platform.secrets(settings)
        return [v for v in values if v]

    def status(self) -> dict[str, str]:
        """Each platform's name and whether (and how) it is configured."""
        found: dict[str, str] = {}
        for module in PLATFORMS:
            platform = _platform(module)
            configured = self.platforms.get(platform.NAME)
            found[platform.NAME] = (
                platform.describe(configured[1]) if configured else platform.NOT_CONFIGURED
            )
        return found


def _platform(module: str) -> Platform:
    loaded: Platform = importlib.import_module(module)
    return loaded


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read the core's and every platform's settings; ConfigError names a bad variable."""
    env = environment() if env is None else env
    platforms: dict[str, tuple[Platform, Any]] = {}
    for module in PLATFORMS:
        platform = _platform(module)
        settings = platform.load(env)
        if settings is not None:
            platforms[platform.NAME] = (platform, settings)
    return Config(load_settings(env), platforms)


async def open_engine(settings: Settings) -> Engine:
    """The production engine: the configured store, the provider's client, Tekken loaded."""
    from bot.store import open_store

    store = await open_store(settings.database_url)
    # One breaker for the endpoint, shared by every conversation (bot/breaker.py).
    model = guard(model_client(settings), endpoint(settings))
    await asyncio.to_thread(tokens.load)
    sources: list[ToolSource] = []
    if settings.mcp_servers and settings.tools:
        from bot.tools.mcp_servers import McpServers

        sources.append(McpServers(list(settings.mcp_servers)))
    timed = metrics.TimedModel(model) if settings.metrics_port else model  # latency, errors
    engine = Engine(settings, store, timed, tool_sources=sources)
    await engine.start()
    return engine


def adapters(engine: Engine, config: Config) -> list[PlatformAdapter]:
    return [platform.adapter(engine, settings) for platform, settings in config.platforms.values()]
