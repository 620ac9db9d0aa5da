"""A loopback fake of Discord's REST API and gateway for driving the real discord.py client."""

from tests.fakes.discord.records import InteractionRecord, Posted
from tests.fakes.discord.server import BOT_TOKEN, FakeDiscord

__all__ = ["BOT_TOKEN", "FakeDiscord", "InteractionRecord", "Posted"]
