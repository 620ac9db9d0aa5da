"""Discord's settings, from the same environment as the core's (see bot/config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import ConfigError, flag, id_list, url

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
    # None: one process runs every shard, as many as Discord recommends (GET /gateway/bot).
    shard_count: int | None = None
    shard_ids: tuple[int, ...] = ()  # () with a count: all of them
    # TEAMBOT_DISCORD_THREADS: a top-level mention in a text channel starts a thread there.
    threads: bool = True


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
    shard_count = _shard_count(env)
    return DiscordSettings(
        bot_token=token,
        api_base_url=url(env, "DISCORD_API_BASE_URL", "https://discord.com/api/v10").rstrip("/"),
        gateway_url=url(env, "DISCORD_GATEWAY_URL", gateway) if gateway else "",
        guild_ids=tuple(guild_ids),
        shard_count=shard_count,
        shard_ids=_shard_ids(env, shard_count),
        threads=flag(env, "TEAMBOT_DISCORD_THREADS", True),
    )


def _shard_count(env: Mapping[str, str]) -> int | None:
    raw = env.get("DISCORD_SHARD_COUNT", "").strip()
    if not raw:
        return None
    if _number(raw) < 1:
        raise ConfigError("DISCORD_SHARD_COUNT", f"a whole number of at least 1 (got {raw!r})")
    return int(raw)


def _shard_ids(env: Mapping[str, str], count: int | None) -> tuple[int, ...]:
    """The shards this process runs, each once, all below DISCORD_SHARD_COUNT."""
    parts = id_list(env, "DISCORD_SHARD_IDS")
    if not parts:
        return ()
    if count is None:
        raise ConfigError(
            "DISCORD_SHARD_IDS", "needs DISCORD_SHARD_COUNT, the total number of shards"
        )
    ids: list[int] = []
    for part in parts:
        shard = _number(part)
        if not 0 <= shard < count or shard in ids:
            raise ConfigError(
                "DISCORD_SHARD_IDS",
                f"comma-separated distinct shard ids from 0 to {count - 1} (got {part!r})",
            )
        ids.append(shard)
    return tuple(ids)


def _number(text: str) -> int:
    """`text` as a whole number, or -1 when it is not one."""
    return int(text) if text.isascii() and text.isdigit() else -1


def secrets(settings: DiscordSettings) -> list[str]:
    return [settings.bot_token]


def describe(settings: DiscordSettings) -> str:
    if settings.shard_count is None:
        return "configured"
    shards = ",".join(map(str, settings.shard_ids)) or "all"
    return f"configured (shards {shards} of {settings.shard_count})"


def adapter(engine: Engine, settings: DiscordSettings) -> DiscordAdapter:
    from adapters.discord.adapter import DiscordAdapter

    return DiscordAdapter(engine, settings)
