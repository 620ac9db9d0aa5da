"""Where Discord replies go, and Discord's rate limits as the shared scheduler spends them.

A reply goes to a channel (its first message replies to the question, each further one
to the message before) or to a slash command's follow-ups; a regenerated answer replaces
the old one's messages in place. Discord allows 5 sends and edits per 5 s per channel,
5 per interaction token, and 50 requests a second in all. The reply's last message
carries its buttons (adapters/discord/buttons.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import discord

from adapters.discord.buttons import view_for
from adapters.discord.recovery import message_ref
from bot.delivery import (
    Controls,
    File,
    Limit,
    NativeStream,
    Refused,
    Scheduler,
    Style,
    Thinking,
)
from bot.delivery.budget import SlidingWindow
from bot.delivery.plan import Kind

log = logging.getLogger(__name__)

STYLE = Style(limit=2000, emphasis="*", note_prefix="-# ", thinking=Thinking.FILE, buttons=True)
# Nothing the model writes may ping anyone, including the author of the message we reply to.
NO_MENTIONS = discord.AllowedMentions.none()
TYPING_EVERY_S = 8.0  # a typing indicator lasts about 10 s
GLOBAL = "global"

# Discord allows 50 requests a second; leave room for the library's own calls. Growth may
# use only a third of it, so when many replies finish (or start showing text) at once their
# requests find the rest waiting; typing only when half is free.
GLOBAL_LIMIT = Limit(lambda: SlidingWindow(48, 1.0), growth_keep=32, indicate_keep=23)
# Per channel and per interaction: 5 per 5 s, one kept for each reply's final edit.
BUCKET_LIMIT = Limit(lambda: SlidingWindow(5, 5.0), reserve_finals=True, spread_growth=True)


def limits(scope: str) -> Limit:
    return GLOBAL_LIMIT if scope == GLOBAL else BUCKET_LIMIT


def scheduler() -> Scheduler:
    return Scheduler(limits)


@contextlib.asynccontextmanager
async def global_slot(pacer: Scheduler) -> AsyncIterator[None]:
    """One request of the global budget for a call outside any reply (starting a thread),
    so that replies and such calls together never exceed Discord's global limit."""
    _, budget = pacer.budget(GLOBAL)
    now = pacer.now()
    while (at := budget.free_at(now)) > now:
        await asyncio.sleep(0.05 if at == math.inf else at - now)  # inf: all in flight
        now = pacer.now()
    budget.acquire(now)
    try:
        yield
    finally:
        budget.release(pacer.now())
        pacer.kick()


def _files(files: Sequence[File]) -> list[discord.File]:
    return [discord.File(io.BytesIO(f.data), filename=f.name) for f in files]


def _extra(files: Sequence[File], controls: Controls | None) -> dict[str, Any]:
    """A new message's files and buttons, where it has any."""
    extra: dict[str, Any] = {"files": _files(files)} if files else {}
    view = view_for(controls)
    if view is not None:
        extra["view"] = view
    return extra


@contextlib.contextmanager
def _refusals(channel: str) -> Iterator[None]:
    """Discord's HTTP errors as the delivery's `Refused`, with Discord's own error code
    (50013 Missing Permissions, 10003 Unknown Channel, ...) or else the HTTP status."""
    try:
        yield
    except discord.HTTPException as exc:
        code = str(exc.code or exc.status)
        detail = f"HTTP {exc.status}" + (f", {exc.text}" if exc.text else "")
        raise Refused(code, platform="Discord", channel=channel, detail=detail) from exc


class _Messages:
    """What both surfaces share: no native streaming, edits that keep earlier files."""

    style = STYLE
    edit_interval = 0.0
    stream: NativeStream | None = None
    indicate_every = 0.0

    channel_id = ""  # where the messages go, for the log

    async def edit(
        self, handle: Any, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> Any:
        message: discord.Message | discord.WebhookMessage = handle
        extra: dict[str, Any] = {"view": view_for(controls)}  # None takes the buttons off
        if files:
            extra["attachments"] = [*message.attachments, *_files(files)]
        with _refusals(self.channel_id):
            return await message.edit(content=text, allowed_mentions=NO_MENTIONS, **extra)

    async def delete(self, handle: Any) -> None:
        with _refusals(self.channel_id):
            await handle.delete()

    async def indicate(self, activity: str) -> bool:
        return False

    async def settle(self, shown: bool) -> None:
        """Nothing to clean up on Discord."""


class ChannelSurface(_Messages):
    """Replies in a text channel, thread or DM, the first one to the asking message."""

    indicate_every = TYPING_EVERY_S

    def __init__(
        self, channel: discord.abc.Messageable, channel_id: int, reply_to: discord.Message | None
    ) -> None:
        self.channel = channel
        self.channel_id = str(channel_id)
        self._scopes = (f"channel:{channel_id}", GLOBAL)
        self._anchor = reply_to

    def scopes(self, kind: Kind) -> Sequence[str]:
        return (GLOBAL,) if kind is Kind.INDICATE else self._scopes

    def ref(self, handle: discord.Message) -> str:
        """How bot/journal.py finds this message again after a crash."""
        return message_ref(handle)

    async def post(
        self, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> discord.Message:
        extra = _extra(files, controls)
        if self._anchor is not None:
            extra["reference"] = self._anchor.to_reference(fail_if_not_exists=False)
        with _refusals(self.channel_id):
            message = await self.channel.send(
                text, allowed_mentions=NO_MENTIONS, suppress_embeds=True, **extra
            )
        self._anchor = message
        return message

    async def indicate(self, activity: str) -> bool:
        try:
            await self.channel.typing()
        except discord.HTTPException as exc:
            log.info("typing indicator failed: %s", exc.status)
        return True


class FollowupSurface(_Messages):
    """Answers to a deferred slash command: follow-ups, edited while they grow."""

    def __init__(self, interaction: discord.Interaction, ephemeral: bool = False) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        self.channel_id = str(interaction.channel_id or "")
        # Interaction webhooks have their own limits, not the global one.
        self._scopes = (f"webhook:{interaction.id}",)

    def scopes(self, kind: Kind) -> Sequence[str]:
        return () if kind is Kind.INDICATE else self._scopes

    async def post(
        self, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> discord.WebhookMessage:
        extra = _extra(files, controls)
        with _refusals(self.channel_id):
            return await self.interaction.followup.send(
                text,
                wait=True,
                allowed_mentions=NO_MENTIONS,
                ephemeral=self.ephemeral,
                suppress_embeds=True,  # cited links stay links, not previews
                **extra,
            )


class Replacing(_Messages):
    """A regenerated answer, shown in the old answer's messages: each of its messages is
    first an edit of the old one in its place, then new ones follow `more`; old messages
    left over are deleted once the new answer is complete."""

    def __init__(self, old: Sequence[Any], more: ChannelSurface | FollowupSurface) -> None:
        self._old = list(old)
        self._more = more
        self.channel_id = more.channel_id
        self.indicate_every = more.indicate_every

    def scopes(self, kind: Kind) -> Sequence[str]:
        return self._more.scopes(kind)

    async def post(
        self, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> Any:
        if not self._old:
            return await self._more.post(text, files, controls=controls)
        handle = self._old.pop(0)
        edited = await self.edit(handle, text, files, controls=controls)
        return handle if edited is None else edited

    async def indicate(self, activity: str) -> bool:
        return await self._more.indicate(activity)

    async def settle(self, shown: bool) -> None:
        for handle in self._old:
            with contextlib.suppress(discord.HTTPException):
                await handle.delete()
        self._old = []
