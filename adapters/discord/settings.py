"""Discord's settings, from the same environment as the core's (see bot/config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import ConfigError, id_list, url

if TYPE_CHECKING:
    from adapters.discord.adapter import DiscordAdapter
    from bot.engine import Engine

NAME = "Discord"
NOT_CONFIGURED = "not configured (DISCORD_BOT_TOKEN)"


@dataclass(frozen=True)
class DiscordSettings:
    bot_token: str
    api_base_url: str = "https://discord.com/api/v10"
    gateway_url: str = ""
    guild_ids: tuple[int, ...] = ()


def load(env: Mapping[str, str]) -> DiscordSettings | None:
    """None when DISCORD_BOT_TOKEN is unset; ConfigError for a bad value."""
    token = env.get("DISCORD_BOT_TOKEN", "").strip()
    if not token:
        return None
    guild_ids = []
    for part in id_list(env, "DISCORD_GUILD_IDS"):
        if not part.isdigit():
            raise ConfigError(
                "DISCORD_GUILD_IDS", f"comma-separated numeric guild ids (got {part!r})"
            )
        guild_ids.append(int(part))
    gateway = env.get("DISCORD_GATEWAY_URL", "").strip()
    return DiscordSettings(
        bot_token=token,
        api_base_url=url(env, "DISCORD_API_BASE_URL", "https://discord.com/api/v10").rstrip("/"),
        gateway_url=url(env, "DISCORD_GATEWAY_URL", gateway) if gateway else "",
        guild_ids=tuple(guild_ids),
    )


def secrets(settings: DiscordSettings) -> list[str]:
    return [settings.bot_token]


def describe(settings: DiscordSettings) -> str:
    return "configured"


def adapter(engine: Engine, settings: DiscordSettings) -> DiscordAdapter:
    from adapters.discord.adapter import DiscordAdapter

    return DiscordAdapter(engine, settings)
