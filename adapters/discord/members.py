"""Which servers a person is in, for what a question asked in a DM may search.

Without the privileged members intent discord.py caches no members, so membership is
asked of Discord (GET /guilds/{id}/members/{user}) and remembered for a few minutes.
A failed lookup counts as "not a member": the answer then searches less, never more.
"""

from __future__ import annotations

import logging
import time

import discord

log = logging.getLogger("teambot.discord")

MAX_AGE_S = 600.0
MAX_GUILDS = 25  # a team bot is in a few servers; never fan out over hundreds

_cache: dict[tuple[int, frozenset[int]], tuple[tuple[str, ...], float]] = {}


async def spaces_of(client: discord.Client, user: discord.abc.User) -> tuple[str, ...]:
    """The ids of the servers, among the bot's, that `user` is a member of."""
    guilds = client.guilds[:MAX_GUILDS]
    key = (user.id, frozenset(g.id for g in guilds))
    cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached[1] < MAX_AGE_S:
        return cached[0]
    found = tuple([str(g.id) for g in guilds if await _is_member(g, user.id)])
    _cache[key] = (found, time.monotonic())
    return found


async def _is_member(guild: discord.Guild, user_id: int) -> bool:
    if guild.get_member(user_id) is not None:
        return True
    try:
        await guild.fetch_member(user_id)
    except discord.NotFound:
        return False
    except discord.HTTPException as exc:
        log.info("member lookup in %s failed: HTTP %s", guild.id, exc.status)
        return False
    return True
