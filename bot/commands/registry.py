"""The command registry: every command declared once, every platform's view derived from it.

A `Command` says what it is called, what it takes, its help line, who may run it,
whether its answer is private and where it exists. From the registry come the
engine's dispatch (`Registry.run`), the help text per platform, the Discord command
tree (`adapters/discord/commands.py`) and Slack's slash commands and manifest
(`adapters/slack/slash.py`, `adapters/slack/manifest.py`).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from bot.config import Settings
from bot.model import ModelClient
from bot.store import UsageTotals
from bot.types import Author, CommandResult, ConversationKey, ConversationSettings, Place

PLATFORMS = frozenset({"discord", "slack", "console"})
CHAT_PLATFORMS = frozenset({"discord", "slack"})
# Who counts as an admin, as a refused non-admin is told, per platform.
ADMINS = {
    "discord": "the people listed in TEAMBOT_ADMIN_IDS and members with Manage Server",
    "slack": "the people listed in TEAMBOT_ADMIN_IDS and workspace admins and owners",
    "": "the people listed in TEAMBOT_ADMIN_IDS (and server managers on Discord, "
    "workspace admins on Slack)",
}


class Services(Protocol):
    """What command handlers may use of the engine (the engine implements it)."""

    settings: Settings
    model: ModelClient  # asked for its `capabilities` (bot.model.capabilities_of)

    def is_admin(self, author: Author | str) -> bool:
        """In TEAMBOT_ADMIN_IDS, or (given an Author) an admin on its platform."""
        ...

    def tool_names(self) -> list[str]:
        """The tools replies may use, when a conversation has them on."""
        ...

    async def forget(self, key: ConversationKey) -> int: ...

    async def forget_user(self, call: Call) -> int:
        """Delete everything the caller wrote on this platform and their DMs with the bot
        (audited); return how many messages went."""
        ...

    async def audit(self, call: Call, action: str, detail: str) -> None:
        """Append an admin action (who, what) to the audit table."""
        ...

    async def spending(
        self, key: ConversationKey, user_id: str
    ) -> list[tuple[str, float, float | None]]:
        """(what, spent today or this month, limit) for each limit a call here would have."""
        ...

    async def set_spend_limit(self, call: Call, scope: str, amount: float | None) -> None:
        """Override a limit (None: back to the configured one), recorded in the audit log."""
        ...

    async def summarize(self, call: Call) -> str:
        """The summary `call.args` asks for (without a trailing `private`), as Markdown."""
        ...

    async def conversation_settings(self, key: ConversationKey) -> ConversationSettings: ...

    async def set_setting(self, key: ConversationKey, name: str, value: str | None) -> None: ...

    async def usage_totals(
        self,
        *,
        since: float | None = None,
        user_id: str | None = None,
        key: ConversationKey | None = None,
        kind: str | None = None,
    ) -> UsageTotals: ...


@dataclass(frozen=True)
class Call:
    """One use of a command: who typed what, where."""

    services: Services
    key: ConversationKey
    author: Author
    args: str
    is_group: bool = True
    place: Place | None = None  # where it was typed, for what it may read (see Message)
    spaces: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()  # the caller's roles there (see Message)
    channels: tuple[str, ...] = ()  # the channel, its parent and category (see Message)

    @property
    def by_admin(self) -> bool:
        """TEAMBOT_ADMIN_IDS, Discord's Manage Server, Slack's workspace admins and owners."""
        return self.services.is_admin(self.author)


class Kind(enum.Enum):
    """The kinds of value an option takes; each platform maps them to its own widgets."""

    TEXT = "text"
    FLAG = "flag"
    IMAGE = "image"


@dataclass(frozen=True)
class Option:
    name: str
    description: str
    kind: Kind = Kind.TEXT
    choices: tuple[str, ...] = ()
    required: bool = False


class Who(enum.Enum):
    """Who may run a command; in a DM with the bot everyone is in charge."""

    EVERYONE = "everyone"
    ADMINS_TO_CHANGE = "admins to change"  # anyone may run it without arguments, to look


Handler = Callable[[Call], Awaitable[CommandResult]]


@dataclass(frozen=True)
class Command:
    """A command as people see it everywhere.

    `handler` is None for `ask`, which is a question for the reply pipeline rather than
    something the engine answers in one piece. `private` decides before the command
    runs whether its answer is shown only to the caller: Discord must know that when
    it acknowledges the command.
    """

    name: str
    summary: str  # Discord's description, Slack's description (at most 100 characters)
    help: str  # the help line, after "`/name args`: "
    handler: Handler | None
    usage: str = ""  # the argument hint, e.g. "on|off|show"
    options: tuple[Option, ...] = ()
    who: Who = Who.EVERYONE
    private: bool | Callable[[Call], bool] = False
    platforms: frozenset[str] = PLATFORMS

    def is_private(self, call: Call) -> bool:
        return self.private(call) if callable(self.private) else self.private

    def allowed(self, call: Call) -> bool:
        if self.who is Who.EVERYONE or not call.is_group or not call.args:
            return True
        return call.by_admin

    def typed(self, platform: str) -> str:
        """How a person types it on `platform` (every platform here uses `/name`)."""
        del platform  # kept so a platform with another syntax needs no new call sites
        return f"/{self.name}"


@dataclass
class Registry:
    commands: dict[str, Command] = field(default_factory=dict)
    intro: dict[str, str] = field(default_factory=dict)  # per platform, above the list
    outro: str = ""

    def add(self, command: Command) -> Command:
        if command.name in self.commands:
            raise ValueError(f"command {command.name!r} declared twice")
        self.commands[command.name] = command
        return command

    def on(self, platform: str) -> Iterator[Command]:
        """The commands that exist on `platform`, in declaration order.

        A platform outside PLATFORMS (tests, a new adapter) sees every command.
        """
        return (c for c in self.commands.values() if _offers(c, platform))

    def get(self, name: str) -> Command | None:
        return self.commands.get(name.strip().lower().lstrip("/"))

    def is_private(self, name: str, call: Call) -> bool:
        command = self.get(name)
        return command is None or command.is_private(call)

    async def run(self, name: str, call: Call) -> CommandResult:
        command = self.get(name)
        platform = call.key.platform
        if command is None or command.handler is None or not _offers(command, platform):
            return CommandResult(
                f"I don't know the command `{name}`. Try `/help`.",
                private=True,
            )
        if not command.allowed(call):
            return CommandResult(
                f"Only admins can change this here with `{command.typed(platform)}`: "
                f"{ADMINS.get(platform, ADMINS[''])}.",
                private=True,
            )
        result = await command.handler(call)
        return CommandResult(result.text, result.private or command.is_private(call))

    def help(self, platform: str) -> str:
        """The help text as people on `platform` type the commands."""
        lines = [self.intro.get(platform, self.intro.get("", "")), "", "Commands:"]
        for command in self.on(platform):
            typed = command.typed(platform)
            usage = f" {command.usage}" if command.usage else ""
            lines.append(f"• `{typed}{usage}`: {command.help.format(typed=typed)}")
        return "\n".join([*lines, "", self.outro]).strip()


def _offers(command: Command, platform: str) -> bool:
    return platform in command.platforms or platform not in PLATFORMS
