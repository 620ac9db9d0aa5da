"""JSON shapes of Discord objects, as the real API sends them (only the fields discord.py reads)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1420070400000
_counter = itertools.count(1)

# Every permission bit a bot could need; the fake never refuses on permissions.
ALL_PERMISSIONS = str((1 << 50) - 1)
ADMINISTRATOR = 1 << 3  # bypasses every channel's permission overwrites
MANAGE_GUILD = 1 << 5  # "Manage Server"
# What only moderators may do: kick (1), ban (2), Administrator (3), manage channels (4),
# Manage Server (5), manage messages (13), nicknames (27), roles (28), webhooks (29),
# expressions (30), events (33), threads (34), moderate members (40).
MODERATION = sum(1 << bit for bit in (1, 2, 3, 4, 5, 13, 27, 28, 29, 30, 33, 34, 40))
# What @everyone may do in a typical server: everything but moderation.
EVERYONE_PERMISSIONS = str(((1 << 50) - 1) & ~MODERATION)


def snowflake() -> str:
    """A fresh, increasing snowflake whose timestamp is now (discord.py derives created_at)."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_counter) & 0x3FFFFF))


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def user(uid: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": uid,
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
    }


def member(user_payload: dict[str, Any], roles: list[str] | None = None) -> dict[str, Any]:
    return {
        "user": user_payload,
        "nick": None,
        "roles": roles or [],
        "joined_at": "2024-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


def text_channel(
    cid: str, guild_id: str, name: str, parent_id: str | None = None
) -> dict[str, Any]:
    """A text channel; `parent_id` is the category it is filed under."""
    return {
        "id": cid,
        "type": 0,
        "guild_id": guild_id,
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "parent_id": parent_id,
    }


def category_channel(cid: str, guild_id: str, name: str) -> dict[str, Any]:
    """A category (type 4): channels name it as their `parent_id`."""
    return {
        "id": cid,
        "type": 4,
        "guild_id": guild_id,
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
    }


def thread_channel(
    tid: str, guild_id: str, parent_id: str, name: str, owner: str
) -> dict[str, Any]:
    return {
        "id": tid,
        "type": 11,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "name": name,
        "owner_id": owner,
        "message_count": 0,
        "member_count": 1,
        "rate_limit_per_user": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": iso_now(),
            "locked": False,
        },
    }


def dm_channel(cid: str, recipient: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "type": 1, "recipients": [recipient], "last_message_id": None}


def guild(
    gid: str,
    name: str,
    owner_id: str,
    channels: list[dict[str, Any]],
    threads: list[dict[str, Any]],
    members: list[dict[str, Any]],
    roles: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    everyone = {
        "id": gid,
        "name": "@everyone",
        "permissions": EVERYONE_PERMISSIONS,
        "position": 0,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }
    return {
        "id": gid,
        "name": name,
        "icon": None,
        "owner_id": owner_id,
        "region": "",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "features": [],
        "roles": [everyone, *roles],
        "emojis": [],
        "stickers": [],
        "channels": channels,
        "threads": threads,
        "members": members,
        "member_count": len(members),
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "large": False,
        "unavailable": False,
        "joined_at": "2024-01-01T00:00:00+00:00",
        "system_channel_flags": 0,
    }


def role(rid: str, name: str, permissions: int = 0, position: int = 1) -> dict[str, Any]:
    """A role people are given; `permissions` is its bit set (e.g. MANAGE_GUILD)."""
    return {
        "id": rid,
        "name": name,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def bot_role(rid: str, name: str, bot_id: str) -> dict[str, Any]:
    """The role Discord creates for a bot when it joins (mentionable as <@&id>)."""
    return {
        "id": rid,
        "name": name,
        "permissions": ALL_PERMISSIONS,
        "position": 1,
        "color": 0,
        "hoist": False,
        "managed": True,
        "mentionable": True,
        "flags": 0,
        "tags": {"bot_id": bot_id},
    }


def attachment(aid: str, filename: str, content_type: str, size: int, url: str) -> dict[str, Any]:
    return {
        "id": aid,
        "filename": filename,
        "content_type": content_type,
        "size": size,
        "url": url,
        "proxy_url": url,
    }


def message(
    mid: str,
    channel_id: str,
    author: dict[str, Any],
    content: str,
    *,
    guild_id: str | None = None,
    author_member: dict[str, Any] | None = None,
    mentions: list[dict[str, Any]] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    reference: dict[str, Any] | None = None,
    referenced: dict[str, Any] | None = None,
    webhook_id: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": mid,
        "channel_id": channel_id,
        "author": author,
        "content": content,
        "timestamp": iso_now(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": mentions or [],
        "mention_roles": [],
        "attachments": attachments or [],
        "embeds": [],
        "pinned": False,
        "type": 19 if reference else 0,
        "flags": 0,
        "components": [],
    }
    if guild_id is not None:
        data["guild_id"] = guild_id
    if author_member is not None:
        data["member"] = {k: v for k, v in author_member.items() if k != "user"}
    if reference is not None:
        data["message_reference"] = reference
        data["referenced_message"] = referenced
    if webhook_id is not None:
        data["webhook_id"] = webhook_id
    return data
