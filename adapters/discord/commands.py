"""Slash commands built from the command registry: `/ask` streams an answer, the rest run
in the engine. The message menu's "Summarize from here" runs `summarize` from a message on;
its "Ask teambot" asks about a message (adapters/discord/ask.py). Every command may be
installed in a server or by a user, and used in servers, the bot's DM and other DMs.

Every command defers at once (Discord voids an interaction not acknowledged within 3 s)
and answers by follow-up. Whether a reply is private must be chosen at defer time: a
follow-up cannot make a public defer ephemeral, so the registry says so before running.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import discord
from discord import app_commands

from adapters.discord.ask import ask_teambot, must_be_private
from adapters.discord.clicks import note_answer
from adapters.discord.convert import (
    author_of,
    channels_of,
    describe,
    interaction_facts,
    interaction_key,
    place_for,
    roles_of,
    spaces_for,
)
from adapters.discord.delivery import FollowupSurface
from bot.attachments import prepare
from bot.commands import REGISTRY, Command, Kind, Option
from bot.delivery import BROKEN, Scheduler, deliver, say
from bot.engine import Engine
from bot.types import CommandResult, Message

log = logging.getLogger(__name__)

SUMMARIZE_FROM_HERE = "Summarize from here"  # a message context menu command

# How each kind of option appears in Discord's command picker.
OPTION_TYPES: dict[Kind, Any] = {
    Kind.TEXT: str,
    Kind.FLAG: bool,
    Kind.IMAGE: discord.Attachment,
}


# Where commands may be installed and used: Discord's integration types (0 server, 1 user)
# and contexts (0 server, 1 the bot's DM, 2 other DMs and group DMs).
INSTALLS = app_commands.AppInstallationType(guild=True, user=True)
CONTEXTS = app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True)


def install(
    tree: app_commands.CommandTree[Any], engine: Engine, pacer: Scheduler, *, threads: bool = True
) -> None:
    """Add every command the registry offers on Discord to `tree`, and the message menu's
    "Summarize from here" and "Ask teambot" (answered in a thread when `threads`)."""
    tree.error(on_command_error)
    tree.allowed_installs, tree.allowed_contexts = INSTALLS, CONTEXTS
    offered = list(REGISTRY.on("discord"))
    for command in offered:
        tree.add_command(app_command(command, engine, pacer))
    if any(command.name == "summarize" for command in offered):
        tree.add_command(summarize_from_here(engine, pacer))
    tree.add_command(ask_teambot(engine, pacer, threads=threads))


def _parameter(option: Option) -> inspect.Parameter:
    kind: Any = app_commands.Choice[str] if option.choices else OPTION_TYPES[option.kind]
    return inspect.Parameter(
        option.name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=kind if option.required else kind | None,
        default=inspect.Parameter.empty if option.required else None,
    )


def app_command(
    command: Command, engine: Engine, pacer: Scheduler
) -> app_commands.Command[Any, ..., None]:
    """The registry's `command` as a discord.py command with typed, described options."""

    async def callback(interaction: discord.Interaction, **options: Any) -> None:
        values = {
            k: v.value if isinstance(v, app_commands.Choice) else v for k, v in options.items()
        }
        if command.handler is None:
            refused = engine.refusal(interaction_key(interaction), **_facts(interaction))
            if refused is not None:  # a refused asker is told privately, every time
                await interaction.response.defer(thinking=True, ephemeral=True)
                await say(pacer, FollowupSurface(interaction, True), refused)
                return
            await interaction.response.defer(thinking=True, ephemeral=must_be_private(interaction))
            await ask_command(engine, pacer, interaction, values)
            return
        # Text options in order, then the names of the flags that are on ("1d private").
        words = [str(v) for v in values.values() if isinstance(v, str)]
        words += [name for name, v in values.items() if v is True]
        args = " ".join(words).strip()
        await run_command(engine, pacer, interaction, command.name, args)

    first = inspect.Parameter(
        "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction
    )
    callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [first, *map(_parameter, command.options)]
    )
    callback.__name__ = callback.__qualname__ = f"{command.name}_command"
    if command.options:
        app_commands.describe(**{o.name: o.description for o in command.options})(callback)
    choices = {
        o.name: [app_commands.Choice(name=c, value=c) for c in o.choices]
        for o in command.options
        if o.choices
    }
    if choices:
        app_commands.choices(**choices)(callback)
    return app_commands.Command(name=command.name, description=command.summary, callback=callback)


def summarize_from_here(engine: Engine, pacer: Scheduler) -> app_commands.ContextMenu:
    """A message's Apps menu item: `summarize from:<its link>`, the span from that message
    to now in its channel, answered in the channel for everyone."""

    async def callback(interaction: discord.Interaction, message: discord.Message) -> None:
        await run_command(engine, pacer, interaction, "summarize", f"from:{message.jump_url}")

    return app_commands.ContextMenu(name=SUMMARIZE_FROM_HERE, callback=callback)


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
    engine: Engine, pacer: Scheduler, interaction: discord.Interaction, options: dict[str, Any]
) -> None:
    prompt = str(options.get("prompt") or "")
    image: discord.Attachment | None = options.get("image")
    reasoning: bool | None = options.get("reasoning")
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
        place=place_for(interaction.channel),
        spaces=await spaces_for(interaction.client, interaction.user, interaction.guild),
        roles=roles_of(interaction.user),
        channels=_channels(interaction),
    )
    surface = FollowupSurface(interaction, must_be_private(interaction))
    reply = await deliver(pacer, surface, engine.reply(message), prepared.notes)
    await note_answer(engine, reply)


def _channels(interaction: discord.Interaction) -> tuple[str, ...]:
    return channels_of(interaction.channel) or (str(interaction.channel_id),)


_facts = interaction_facts


async def run_command(
    engine: Engine,
    pacer: Scheduler,
    interaction: discord.Interaction,
    name: str,
    args: str,
) -> None:
    """Run a command; whether its answer is private is asked of the engine first, since
    Discord fixes it when the command is acknowledged."""
    key, facts = interaction_key(interaction), _facts(interaction)
    ephemeral = engine.answers_privately(key, name=name, args=args, **facts)
    ephemeral = ephemeral or must_be_private(interaction)
    await interaction.response.defer(thinking=True, ephemeral=ephemeral)
    try:
        result = await engine.command(
            key,
            name=name,
            args=args,
            spaces=await spaces_for(interaction.client, interaction.user, interaction.guild),
            **facts,
        )
    except Exception:
        log.exception("/%s failed in %s", name, key)
        result = CommandResult(BROKEN, private=True)
    await say(pacer, FollowupSurface(interaction, ephemeral), result.text)
