"""Register application commands (slash commands and the message menu's) only when they
changed since the last sync.

`on_ready` fires on every reconnect and Discord caps command creates per day, so the
adapter syncs from `setup_hook` and only when a fingerprint of the command set differs
from the one stored in the database (which survives restarts, unlike process memory).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import discord
from discord import app_commands

from bot.engine import Engine

log = logging.getLogger(__name__)

META_KEY = "discord_command_sync"


def fingerprint(
    tree: app_commands.CommandTree[Any], app_id: int, guild_ids: tuple[int, ...]
) -> str:
    """Of every command in `tree`: slash commands and context menus alike."""
    commands = sorted(
        (c.to_dict(tree) for c in tree.get_commands()),
        key=lambda c: (int(c.get("type", 1)), str(c["name"])),
    )
    blob = json.dumps(
        {"app": app_id, "guilds": sorted(guild_ids), "commands": commands},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


async def sync_if_changed(
    tree: app_commands.CommandTree[Any], engine: Engine, app_id: int, guild_ids: tuple[int, ...]
) -> bool:
    digest = fingerprint(tree, app_id, guild_ids)
    if await engine.get_meta(META_KEY) == digest:
        log.info("slash commands unchanged since the last sync; not syncing")
        return False
    if guild_ids:
        # Guild commands update instantly, which is what DISCORD_GUILD_IDS is for.
        for gid in guild_ids:
            guild = discord.Object(id=gid)
            tree.copy_global_to(guild=guild)
            await tree.sync(guild=guild)
    else:
        await tree.sync()
    await engine.set_meta(META_KEY, digest)
    where = f"guilds {', '.join(map(str, guild_ids))}" if guild_ids else "globally"
    log.info("synced %d application commands %s", len(tree.get_commands()), where)
    return True
