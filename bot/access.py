"""Who may use the bot, and where: a small pure policy over the access settings.

The settings (bot/config.py) are TEAMBOT_ALLOWED_USERS, TEAMBOT_BLOCKED_USERS,
TEAMBOT_ALLOWED_CHANNELS, TEAMBOT_BLOCKED_CHANNELS, TEAMBOT_ALLOWED_ROLES and
TEAMBOT_ALLOW_DMS, plus TEAMBOT_ADMIN_IDS. The first rule that applies decides:

1. Places, for everyone (admins too). A blocked channel id among the place's ids (the
   channel, a Discord thread's parent channel, the channel's category) refuses: block
   wins over allow, so a blocked channel inside an allowed category is refused, and so
   is an allowed channel inside a blocked category. Outside DMs, when
   TEAMBOT_ALLOWED_CHANNELS is set, one of the place's ids must be listed (a Discord
   category id counts for its channels and their threads). DMs are not channels: the
   channel allow list does not apply to them, TEAMBOT_ALLOW_DMS does.
2. Admins (TEAMBOT_ADMIN_IDS, Discord members with Manage Server in that server, Slack
   workspace admins and owners) pass every other rule, so they can always reach the
   bot, in a DM at least, to see and change its settings.
3. DMs (group DMs too) are refused when TEAMBOT_ALLOW_DMS is false.
4. People. A blocked user is refused. When TEAMBOT_ALLOWED_USERS or
   TEAMBOT_ALLOWED_ROLES is set, a person must be listed by id or hold one of the
   listed roles (either is enough). Roles are Discord role ids and Slack user-group ids.
   A Discord DM carries no roles, so there only the users list (and admins) let someone
   in; Slack user groups are workspace-wide and count in DMs too.
5. Other bots' messages (kept as context, never answered) are not anyone using the
   bot: the allow lists of people do not apply to them; the block lists do.

Empty allow lists mean everyone. Refused messages are neither answered nor stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import Settings

# What a refused person is told (once a day for messages, every time for commands).
NOT_HERE = "I don't answer in this channel."
NO_DMS = "I don't take direct messages; please ask me in a channel."
NOT_FOR_YOU = "Sorry, I'm not available to you here; an admin can give you access."


@dataclass(frozen=True)
class Asker:
    """Who asks (or wrote), and where."""

    user: str
    channels: tuple[str, ...] = ()  # the channel, then its parent channel and category
    roles: tuple[str, ...] = ()  # Discord role ids, Slack user-group ids
    is_dm: bool = False
    platform_admin: bool = False  # Manage Server on Discord, workspace admin/owner on Slack
    is_bot: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # for logs: which rule decided, naming its setting
    sentence: str = ""  # for the person refused; empty when allowed

    def __bool__(self) -> bool:
        return self.allowed


def is_admin(settings: Settings, user: str, platform_admin: bool = False) -> bool:
    """Listed in TEAMBOT_ADMIN_IDS, or an admin by the platform's own say."""
    return platform_admin or user in settings.admin_ids


def decide(settings: Settings, asker: Asker) -> Decision:
    """Whether `asker` may use the bot there (see the module's rules)."""
    s = asker
    blocked = next((c for c in s.channels if c in settings.blocked_channels), None)
    if blocked is not None:
        return _refuse(f"channel {blocked} is in TEAMBOT_BLOCKED_CHANNELS", NOT_HERE)
    listed = any(c in settings.allowed_channels for c in s.channels)
    if settings.allowed_channels and not s.is_dm and not listed:
        where = "/".join(s.channels) or "?"
        return _refuse(f"channel {where} is not in TEAMBOT_ALLOWED_CHANNELS", NOT_HERE)
    if is_admin(settings, s.user, s.platform_admin):
        return Decision(True, "admin")
    if s.is_dm and not settings.allow_dms:
        return _refuse("a DM, and TEAMBOT_ALLOW_DMS is false", NO_DMS)
    if s.user in settings.blocked_users:
        return _refuse(f"user {s.user} is in TEAMBOT_BLOCKED_USERS", NOT_FOR_YOU)
    if s.is_bot or not (settings.allowed_users or settings.allowed_roles):
        return Decision(True, "allowed")
    if s.user in settings.allowed_users:
        return Decision(True, "listed in TEAMBOT_ALLOWED_USERS")
    role = next((r for r in s.roles if r in settings.allowed_roles), None)
    if role is not None:
        return Decision(True, f"role {role} is in TEAMBOT_ALLOWED_ROLES")
    lists = " or ".join(
        name
        for name, ids in (
            ("TEAMBOT_ALLOWED_USERS", settings.allowed_users),
            ("TEAMBOT_ALLOWED_ROLES", settings.allowed_roles),
        )
        if ids
    )
    return _refuse(f"user {s.user} is not in {lists}", NOT_FOR_YOU)


def refusal_claim(platform: str, user: str, now: float, timezone: str) -> str:
    """The event name claimed for the one refusal reply a person gets per day (the day in
    TEAMBOT_TIMEZONE), so it holds across processes and restarts."""
    day = datetime.fromtimestamp(now, ZoneInfo(timezone)).date().isoformat()
    return f"refused:{platform}:{user}:{day}"


def _refuse(reason: str, sentence: str) -> Decision:
    return Decision(False, reason, sentence)
