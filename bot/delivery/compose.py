"""The text a reply shows at each moment, in the platform's own markup.

While the model writes, a reply shows its notes and the answer so far (and, while tools
run, one activity line). When it is done it shows the whole answer with any notice
(cut off, stopped, failed) and footer. `Style` holds what differs between platforms.
`Controls` are the buttons under a reply's last message: Stop while it is written,
Regenerate and feedback once it is complete.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from bot.types import ReplyDone, ReplyFailed


class Thinking(enum.Enum):
    """How shown thinking travels: a file on the last message, or quoted messages after it."""

    FILE = "file"
    QUOTE = "quote"
    NONE = "none"  # the adapter shows it its own way, or not at all


@dataclass(frozen=True)
class Style:
    limit: int  # characters per message
    emphasis: str = "_"  # wraps notices and the empty-answer line
    note_prefix: str = ""  # prefix of each attachment note shown above the answer
    thinking: Thinking = Thinking.QUOTE
    thinking_file: str = "thinking.md"
    # Whether the tools' activity line shows in the reply's text; where it does not, the
    # surface's working indicator carries it (Slack's thread status).
    activity_in_text: bool = True
    # Whether the platform shows a reply's `Controls` as buttons; without, none are sent.
    buttons: bool = False

    def emphasised(self, text: str) -> str:
        return f"{self.emphasis}{text}{self.emphasis}"

    def small(self, text: str) -> str:
        """A footer line: the note prefix where the platform has small text, else emphasis."""
        return f"{self.note_prefix}{text}" if self.note_prefix else self.emphasised(text)


EMPTY_ANSWER = "(The model returned an empty answer.)"


@dataclass(frozen=True)
class File:
    name: str
    data: bytes


@dataclass(frozen=True)
class Controls:
    """The buttons a reply's last message carries, for the stored question it answers.

    `question` is the question's row id: enough for any process to act on a click, even
    after a restart, so surfaces put it into the buttons' ids.
    """

    question: int
    stop: bool = False
    regenerate: bool = False
    feedback: bool = False


@dataclass
class View:
    """Everything a reply may show; `text()` renders it for one platform."""

    notes: list[str] = field(default_factory=list)
    answer: str = ""
    activity: str = ""  # what the bot is doing right now, while it is not done
    notice: str = ""
    footer: str = ""
    thinking: str = ""
    show_thinking: bool = False
    final: bool = False
    tools: tuple[str, ...] = ()
    question: int = 0  # the stored question this answers (0: none, e.g. a command's answer)
    failed: bool = False

    def finish(self, outcome: ReplyDone | ReplyFailed) -> None:
        """Take the engine's last word: the stored answer, or a failure notice."""
        self.final = True
        self.activity = ""
        if isinstance(outcome, ReplyFailed):
            self.notice = outcome.notice
            self.failed = True
            return
        self.question = outcome.question or self.question
        self.answer = outcome.text or self.answer
        self.notice = outcome.notice if outcome.cut_off else ""
        self.thinking = outcome.thinking
        self.show_thinking = outcome.show_thinking
        self.tools = outcome.tools

    def controls(self, style: Style) -> Controls | None:
        """The buttons for now: Stop while the answer is written, Regenerate and feedback
        once complete, only Regenerate after a failure; none without a question."""
        if not (style.buttons and self.question):
            return None
        if not self.final:
            return Controls(self.question, stop=True)
        return Controls(self.question, regenerate=True, feedback=not self.failed)

    def text(self, style: Style) -> str:
        head = "".join(f"{style.note_prefix}{note}\n" for note in self.notes)
        body = self.answer.strip() if self.final else self.answer
        if self.final and self.notice:
            notice = self.notice if not body else style.emphasised(self.notice)
            body = f"{body}\n\n{notice}" if body else notice
        elif self.final and not body:
            body = style.emphasised(EMPTY_ANSWER)
        if self.activity and not self.final and style.activity_in_text:
            activity = style.emphasised(self.activity)
            body = f"{body}\n\n{activity}" if body.strip() else activity
        footer = " · ".join(part for part in (tools_footer(self.tools), self.footer) if part)
        if self.final and footer:
            body = f"{body}\n\n{style.small(footer)}"
        return head + body

    def thinking_messages(self, style: Style) -> str:
        """Thinking to post after the answer (empty unless asked for and quoted)."""
        if not (self.final and self.show_thinking and self.thinking.strip()):
            return ""
        if style.thinking is not Thinking.QUOTE:
            return ""
        return "**Thinking**\n" + quote(self.thinking)

    def files(self, style: Style) -> tuple[File, ...]:
        """Files for the last message of the final answer."""
        if not (self.final and self.show_thinking and self.thinking.strip()):
            return ()
        if style.thinking is not Thinking.FILE:
            return ()
        return (File(style.thinking_file, self.thinking.encode("utf-8")),)


def tools_footer(tools: tuple[str, ...]) -> str:
    """ "🔧 search_messages ×2, current_time": the tools an answer used, compactly."""
    if not tools:
        return ""
    counts = dict.fromkeys(tools, 0)
    for name in tools:
        counts[name] += 1
    shown = (name.replace("__", "/") + (f" ×{n}" if n > 1 else "") for name, n in counts.items())
    return "🔧 " + ", ".join(shown)


def quote(markdown: str) -> str:
    return "\n".join("> " + line if line else ">" for line in markdown.splitlines())
