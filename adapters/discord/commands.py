"""Slash commands: /ask streams an answer; the rest map onto the engine's commands.

Every command defers at once (Discord voids an interaction not acknowledged within 3 s)
and answers by follow-up. Whether a reply is private must be chosen at defer time: a
follow-up cannot make a public defer ephemeral.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from adapters.discord.convert import author_of, describe, interaction_key
from adapters.discord.pacer import Pacer
from adapters.discord.replying import BROKEN, answer
from adapters.discord.streaming import MESSAGE_LIMIT
from adapters.discord.targets import NO_MENTIONS, FollowupTarget
from bot.attachments import prepare
from bot.engine import Engine
from bot.text import split_markdown
from bot.types import CommandResult, Message

log = logging.getLogger(__name__)

REASONING_CHOICES = [app_commands.Choice(name=v, value=v) for v in ("on", "off", "show")]


def install(tree: app_commands.CommandTree[Any], engine: Engine, pacer: Pacer) -> None:
    """Add teambot's commands to `tree`."""
    tree.error(on_command_error)

    @tree.command(name="ask", description="Ask the bot a question")
    @app_commands.describe(
        prompt="What to ask",
        image="An image for the model to look at",
        reasoning="Think before answering (slower, better on hard questions)",
    )
    async def ask(
        interaction: discord.Interaction,
        prompt: str,
        image: discord.Attachment | None = None,
        reasoning: bool | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        await ask_command(engine, pacer, interaction, prompt, image, reasoning)

    @tree.command(name="reset", description="Forget this conversation (channel, thread or DM)")
    async def reset(interaction: discord.Interaction) -> None:
        await run_command(engine, interaction, "reset", "", ephemeral=False)

    @tree.command(name="reasoning", description="Set whether I think before answering here")
    @app_commands.describe(mode="on, off, or show (also posts my thinking as a file)")
    @app_commands.choices(mode=REASONING_CHOICES)
    async def reasoning_cmd(
        interaction: discord.Interaction, mode: app_commands.Choice[str] | None = None
    ) -> None:
        await run_command(
            engine, interaction, "reasoning", mode.value if mode else "", ephemeral=False
        )

    @tree.command(name="system", description="Show or set my instructions here (admins)")
    @app_commands.describe(text="New instructions, or 'clear'; leave empty to show them")
    async def system(interaction: discord.Interaction, text: str | None = None) -> None:
        args = (text or "").strip()
        in_group = interaction.guild_id is not None
        # Mirrors the engine: showing, and refusals to non-admins, are private.
        private = not args or (in_group and not engine.is_admin(str(interaction.user.id)))
        await run_command(engine, interaction, "system", args, ephemeral=private)

    @tree.command(name="usage", description="Tokens and cost: yours, here, and everyone's")
    async def usage(interaction: discord.Interaction) -> None:
        await run_command(engine, interaction, "usage", "", ephemeral=True)

    @tree.command(name="help", description="What I can do")
    async def help_cmd(interaction: discord.Interaction) -> None:
        await run_command(engine, interaction, "help", "", ephemeral=True)


async def on_command_error(
    interaction: discord.Interaction, error: app_commands.AppCommandError
) -> None:
    """Discord refusing a response (e.g. a command acknowledged after 3 s) is one log line."""
    name = interaction.command.name if interaction.command else "?"
    cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
    if isinstance(cause, discord.HTTPException):
        log.warning(
            "/%s: Discord refused the response (HTTP %s, code %s)", name, cause.status, cause.code
        )
    else:
        log.error("/%s failed", name, exc_info=cause)


async def ask_command(
    engine: Engine,
    pacer: Pacer,
    interaction: discord.Interaction,
    prompt: str,
    image: discord.Attachment | None,
    reasoning: bool | None,
) -> None:
    prepared = await prepare(describe([image] if image else []))
    message = Message(
        key=interaction_key(interaction),
        id=f"i{interaction.id}",
        author=author_of(interaction.user),
        text=prompt + prepared.text,
        images=prepared.images,
        attachments=prepared.meta,
        reasoning=reasoning,
        is_group=interaction.guild_id is not None,
    )
    await answer(engine, pacer, FollowupTarget(interaction), message, prepared.notes)


async def run_command(
    engine: Engine, interaction: discord.Interaction, name: str, args: str, *, ephemeral: bool
) -> None:
    await interaction.response.defer(thinking=True, ephemeral=ephemeral)
    key = interaction_key(interaction)
    try:
        result = await engine.command(
            key, author_of(interaction.user), name, args, is_group=interaction.guild_id is not None
        )
    except Exception:
        log.exception("/%s failed in %s", name, key)
        result = CommandResult(BROKEN, private=True)
    for chunk in split_markdown(result.text, MESSAGE_LIMIT) or [result.text]:
        await interaction.followup.send(chunk, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
