"""Platform-neutral values that flow between adapters, the engine and the store.

Adapters build these from platform events; nothing here knows about Discord or Slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.text import repair


@dataclass(frozen=True)
class ConversationKey:
    """Where a conversation lives: a channel, a thread or a DM on one platform.

    `space` is the guild/workspace id ("" for DMs or the console). `thread` is empty
    when the conversation is the whole channel.
    """

    platform: str
    space: str
    channel: str
    thread: str = ""

    def __str__(self) -> str:
        return ":".join((self.platform, self.space, self.channel, self.thread))


@dataclass(frozen=True)
class Author:
    id: str
    name: str
    is_bot: bool = False
    # The platform says this person runs the place: a Discord member with Manage Server
    # in the message's server, a Slack workspace admin or owner. Admins pass the access
    # rules about people (bot/access.py) and may run admin-only commands.
    platform_admin: bool = False

    def __post_init__(self) -> None:
        # Names come from platforms too; one that can't be encoded would fail every write.
        object.__setattr__(self, "name", repair(self.name))


@dataclass(frozen=True)
class Image:
    """An image ready for the model: raw bytes plus its MIME type."""

    mime: str
    data: bytes
    name: str = ""


@dataclass(frozen=True)
class AttachmentMeta:
    """What is remembered of a file someone attached (its content is not stored)."""

    name: str
    mime: str = ""
    size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", repair(self.name))

    @property
    def is_image(self) -> bool:
        return self.mime.startswith("image/")


PUBLIC, PRIVATE, DM = "public", "private", "dm"


@dataclass(frozen=True)
class Place:
    """Whose members can read a conversation: a channel, a private thread or a DM.

    `id` is the platform's id of that channel (or private thread); the threads of a
    channel share its place. `visibility` is PUBLIC (anyone in the guild or workspace
    can read it), PRIVATE (only its members) or DM. Tools use it to decide what an
    asker may see.
    """

    id: str
    name: str = ""
    visibility: str = PRIVATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", repair(self.name))


@dataclass(frozen=True)
class ConversationSettings:
    """What a conversation's members chose for it; None means the bot's default."""

    reasoning: str | None = None  # "on", "off" or "show"
    system: str | None = None  # extra instructions for this conversation
    tools: str | None = None  # "on" or "off"
    # The running summary of turns that left the window (bot/memory.py), kept by the bot
    # itself: never copied to another conversation.
    memory: str | None = None
    digest: str | None = None  # "HH:MM": post a daily digest here then
    # "on": answer every message in this channel (and its threads) without a mention; set
    # on the channel's own conversation (see Engine.listening).
    listen: str | None = None

    def changed(self) -> dict[str, str]:
        """The settings that differ from the defaults, by name (how the store keeps them)."""
        pairs = (("reasoning", self.reasoning), ("system", self.system), ("tools", self.tools))
        return {k: v for k, v in pairs if v}


@dataclass(frozen=True)
class Message:
    """One message seen on a platform, whether or not the bot is asked to answer it.

    `text` is what the model should read: the author's words with the bot's own mention
    stripped and any text attachments already inlined. `reasoning` overrides the
    conversation's default for this one message (a slash-command option); the `think:`
    prefix in `text` is handled by the engine.
    """

    key: ConversationKey
    id: str
    author: Author
    text: str
    images: tuple[Image, ...] = ()
    attachments: tuple[AttachmentMeta, ...] = ()
    reasoning: bool | None = None
    is_group: bool = True
    # Where the conversation lives for visibility; None when the adapter cannot tell,
    # and then tools see only this conversation.
    place: Place | None = None
    # Spaces (guilds, workspaces) whose public channels the author can read; empty
    # means just the conversation's own space.
    spaces: tuple[str, ...] = ()
    # The author's roles where they wrote: Discord role ids (without @everyone), Slack
    # user-group ids (filled only when TEAMBOT_ALLOWED_ROLES is set). A Discord DM has none.
    roles: tuple[str, ...] = ()
    # The channel ids that describe where it was written, for the channel allow and block
    # lists: the channel first, then what contains it (on Discord a thread's parent
    # channel and the channel's category). Empty means just `key.channel`.
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The one door every platform's text comes through (bot/text.py says why).
        object.__setattr__(self, "text", repair(self.text))


@dataclass(frozen=True)
class Usage:
    """Tokens one model call consumed (its price is `bot.accounting.cost_usd`)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of `prompt_tokens`, those the provider served from its prompt cache (billed at the
    # cached rate); 0 when it reports none.
    cached_tokens: int = 0

    @property
    def reported(self) -> bool:
        """Whether a server counted these tokens: `Usage()` is what a stream without
        usage ends with (the estimate is billed instead, never zero)."""
        return self.prompt_tokens > 0 or self.completion_tokens > 0


# Reply events: what the engine yields while answering one message.


@dataclass(frozen=True)
class Started:
    """The model is at work on this reply: its request is on the way.

    `question` is the stored question's row id: what adapters put in the reply's
    buttons (e.g. `tb:stop:<question>`) for Engine.stop/regenerate/feedback.
    """

    question: int = 0


@dataclass(frozen=True)
class TextDelta:
    """More answer text; append it to what is shown."""

    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """More of the model's reasoning; shown only when the user asked for it."""

    text: str


@dataclass(frozen=True)
class ToolActivity:
    """What the bot is doing while tools run (one line, replaced by the next)."""

    text: str


@dataclass(frozen=True)
class ReplyDone:
    """The reply is complete (or was cut off) and has been stored.

    `text` is the whole answer as stored. `cut_off` is true when the stream ended
    early (a model failure after text was shown, or shutdown); `notice` is then a short
    sentence for the user to append.
    """

    text: str
    thinking: str = ""
    usage: Usage = field(default_factory=Usage)
    cut_off: bool = False
    notice: str = ""
    show_thinking: bool = False
    tools: tuple[str, ...] = ()  # the tools the answer used, in first-use order, repeats kept
    # The stored question's and answer's row ids (0 when nothing was stored): buttons carry
    # the question; Engine.answer_posted takes the answer with the platform's message id.
    question: int = 0
    answer: int = 0


@dataclass(frozen=True)
class ReplyFailed:
    """No answer could be produced; `notice` is one short sentence for the user."""

    notice: str


ReplyEvent = Started | TextDelta | ThinkingDelta | ToolActivity | ReplyDone | ReplyFailed


@dataclass(frozen=True)
class CommandResult:
    """What a command says back. `private` replies are shown only to the caller."""

    text: str
    private: bool = False
