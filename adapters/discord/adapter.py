"""DiscordAdapter: runs the client, falling back when the message content intent is refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord
import yarl

from adapters.discord.client import TeambotClient
from adapters.discord.convert import PLATFORM
from adapters.discord.delivery import ChannelSurface, scheduler
from adapters.discord.links import DiscordLinks
from adapters.discord.recovery import DiscordRecoverer
from adapters.discord.settings import DiscordSettings
from bot.delivery import say
from bot.engine import Engine
from bot.errors import ConfigError
from bot.types import ConversationKey

log = logging.getLogger(__name__)

INTENT_HELP = (
    "Discord refused the privileged Message Content intent. To let the bot read channel "
    "messages as context, open https://discord.com/developers/applications, pick this "
    "application, go to Bot > Privileged Gateway Intents and turn on 'Message Content Intent'. "
    "Continuing without it: the bot still answers @mentions, replies that ping it and DMs."
)
LAND_TIMEOUT_S = 1.5
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
UNREACHABLE = (
    OSError,
    aiohttp.ClientError,
    discord.DiscordServerError,
    discord.GatewayNotFound,
    TimeoutError,
)


def _brief(exc: BaseException) -> str:
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status}"
    return str(exc) or type(exc).__name__


def _not_about_voice(record: logging.LogRecord) -> bool:
    # The bot never joins voice, so discord.py's start-up warnings about voice libraries
    # would only alarm operators.
    return "voice will NOT be supported" not in record.getMessage()


logging.getLogger("discord.client").addFilter(_not_about_voice)


def use_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at the configured REST base and gateway (proxies, or a test fake).

    discord.py reads both from class attributes, so this is process-wide.
    """
    discord.http.Route.BASE = settings.api_base_url.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


class DiscordAdapter:
    def __init__(self, engine: Engine, settings: DiscordSettings) -> None:
        self.engine = engine
        engine.register_links(PLATFORM, DiscordLinks())
        engine.register_poster(PLATFORM, self._post)
        self.settings = settings
        self.pacer = scheduler()  # every reply's requests, paced together
        self.pacer.journal = engine.journal
        self.client: TeambotClient | None = None
        self._closing = asyncio.Event()
        self._ready = asyncio.Event()

    async def _post(self, key: ConversationKey, text: str) -> None:
        """Post `text` into a channel (or thread) unprompted, e.g. a daily digest."""
        client = self.client
        channel_id = int(key.thread or key.channel)
        channel: object = client.get_channel(channel_id) if client else None
        if channel is None and client is not None and client.shard_ids is not None:
            # Another process runs that guild's shard; posting needs only REST.
            channel = client.get_partial_messageable(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise LookupError(f"channel {key.thread or key.channel} is not reachable")
        reply = await say(
            self.pacer, ChannelSurface(channel, int(key.thread or key.channel), None), text
        )
        if reply.error:
            raise RuntimeError(f"Discord refused the post: {reply.error}")

    def _connected(self) -> None:
        if not self._ready.is_set() and self.client is not None:
            # Logged in: replies a crash cut short can be edited now (bot/journal.py).
            self.engine.register_recoverer(PLATFORM, DiscordRecoverer(self.client))
        self._ready.set()

    async def run(self) -> None:
        """Connect and serve until `close()`."""
        use_endpoints(self.settings)
        message_content = True
        delay = RETRY_FIRST_S
        while not self._closing.is_set():
            client = self.client = TeambotClient(
                self.engine, self.settings, self.pacer, message_content=message_content
            )
            client.on_connected = self._connected
            try:
                await client.start(self.settings.bot_token)
                return
            except discord.PrivilegedIntentsRequired:
                if not message_content:
                    raise
                log.warning(INTENT_HELP)
                message_content = False
            except discord.LoginFailure:
                await client.close()
                # One line and exit 2, as for every refused credential (bot/cli.py).
                raise ConfigError(
                    "DISCORD_BOT_TOKEN",
                    "Discord refused the token; check it in the Developer Portal",
                ) from None
            except UNREACHABLE as exc:
                # discord.py reconnects by itself once logged in, but not if Discord is
                # unreachable at start-up; keep trying rather than exit.
                delay = RETRY_FIRST_S if self._ready.is_set() else delay
                log.warning("cannot reach Discord (%s); retrying in %.0f s", _brief(exc), delay)
                await client.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            await client.close()

    @property
    def reads_content(self) -> bool:
        return self.client is not None and self.client.reads_content

    @property
    def connected(self) -> bool:
        """Whether the gateway session is up now (every shard's, when sharded); for /healthz."""
        client = self.client
        if client is None or client.is_closed() or not client.is_ready():
            return False  # is_ready() stays true across reconnects: look at the sockets
        shards = getattr(client, "shards", None)
        if isinstance(shards, dict):
            return bool(shards) and not any(shard.is_closed() for shard in shards.values())
        return client.ws is not None and client.ws.open

    async def close(self) -> None:
        self._closing.set()
        # Give replies the engine just finished a moment to land their final edits.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pacer.drain(), LAND_TIMEOUT_S)
        await self.pacer.close()
        if self.client is not None:
            await self.client.close()
