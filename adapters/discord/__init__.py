"""Discord adapter: mentions, DMs, threads, slash commands and streamed replies via discord.py."""

from adapters.discord.adapter import DiscordAdapter

__all__ = ["DiscordAdapter"]
