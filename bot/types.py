"""Platform-neutral values that flow between adapters, the engine and the store.

Adapters build these from platform events; nothing here knows about Discord or Slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @classmethod
    def parse(cls, text: str) -> ConversationKey:
        platform, space, channel, thread = text.split(":", 3)
        return cls(platform, space, channel, thread)


@dataclass(frozen=True)
class Author:
    id: str
    name: str
    is_bot: bool = False


@dataclass(frozen=True)
class Image:
    """An image ready for the model: raw bytes plus its MIME type."""

    mime: str
    data: bytes
    name: str = ""


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
    attachments: tuple[dict[str, object], ...] = ()
    reasoning: bool | None = None
    is_group: bool = True


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def cost_usd(self) -> float:
        return cost_usd(self.prompt_tokens, self.completion_tokens)


INPUT_USD_PER_MTOK = 0.15
OUTPUT_USD_PER_MTOK = 0.60


def cost_usd(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * INPUT_USD_PER_MTOK + completion_tokens * OUTPUT_USD_PER_MTOK) / 1e6


# Reply events: what the engine yields while answering one message.


@dataclass(frozen=True)
class TextDelta:
    """More answer text; append it to what is shown."""

    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """More of the model's reasoning; shown only when the user asked for it."""

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


@dataclass(frozen=True)
class ReplyFailed:
    """No answer could be produced; `notice` is one short sentence for the user."""

    notice: str


ReplyEvent = TextDelta | ThinkingDelta | ReplyDone | ReplyFailed


@dataclass(frozen=True)
class CommandResult:
    """What a command says back. `private` replies are shown only to the caller."""

    text: str
    private: bool = False
