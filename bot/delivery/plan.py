"""The plan of posts, edits and deletes that turns what is shown into what should be shown.

Pure functions over lists of message texts: `shown` is what each posted message of a
reply shows now, `wanted` what it should show. `next_step` names the one request to
make next and how urgent it is; `plan` lists every step to the end, for tests and
for reading. A reply's `Controls` (its buttons) belong on its last message only: a
post or edit carries the controls its message should have, and a message whose
controls are wrong needs an edit like one whose text is.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from bot.delivery.compose import Controls, File


class Priority(enum.IntEnum):
    """Which request goes first when a budget is short: lower is more urgent."""

    FINAL = 0  # the complete answer: never waits for growth
    FIRST = 1  # the first text of a reply
    OVERFLOW = 2  # a part the answer has outgrown, or its next message
    GROW = 3  # more text in the message still being written
    INDICATE = 4  # "typing…" or a status: a courtesy


class Kind(enum.Enum):
    POST = "post"
    EDIT = "edit"
    DELETE = "delete"
    START = "start"  # native streaming: start, append, stop, or give up
    APPEND = "append"
    STOP = "stop"
    ABANDON = "abandon"
    INDICATE = "indicate"


@dataclass(frozen=True)
class Step:
    kind: Kind
    priority: Priority
    index: int = 0  # which message of the reply
    text: str = ""
    files: tuple[File, ...] = ()
    controls: Controls | None = None  # what the posted or edited message carries


def _marks(shown: Sequence[str], marks: Sequence[Controls | None]) -> list[Controls | None]:
    """The controls each shown message carries (None where unknown: none)."""
    return [*marks[: len(shown)], *[None] * (len(shown) - len(marks))]


def next_step(
    shown: Sequence[str],
    wanted: Sequence[str],
    *,
    final: bool,
    files: tuple[File, ...] = (),
    controls: Controls | None = None,
    marks: Sequence[Controls | None] = (),
) -> Step | None:
    """The request that brings `shown` closest to `wanted` now, or None when they agree.

    While the answer grows, a new message comes before edits (people read the newest
    text), and earlier messages are finished before the last one grows. Once final,
    messages are fixed in order, extra ones deleted from the end, and `files` ride on
    the last message. `controls` belong on the last wanted message; `marks` are the
    controls each shown message carries.
    """
    has = _marks(shown, marks)
    last = len(wanted) - 1
    if not final and len(wanted) > len(shown):
        index = len(shown)
        priority = Priority.OVERFLOW if shown else Priority.FIRST
        mark = controls if index == last else None
        return Step(Kind.POST, priority, index, wanted[index], controls=mark)
    for index, text in enumerate(wanted):
        mark = controls if index == last else None
        with_files = files if final and index == last else ()
        if index >= len(shown):
            return Step(Kind.POST, _urgency(final, shown), index, text, with_files, mark)
        if text != shown[index] or mark != has[index]:
            priority = (
                Priority.FINAL if final else Priority.GROW if index == last else Priority.OVERFLOW
            )
            return Step(Kind.EDIT, priority, index, text, with_files, mark)
    if final and len(shown) > len(wanted):
        return Step(Kind.DELETE, Priority.FINAL, len(shown) - 1)
    if final and files and wanted:
        return Step(Kind.EDIT, Priority.FINAL, last, wanted[-1], files, controls)
    return None


def _urgency(final: bool, shown: Sequence[str]) -> Priority:
    if final:
        return Priority.FINAL
    return Priority.OVERFLOW if shown else Priority.FIRST


def plan(
    shown: Sequence[str],
    wanted: Sequence[str],
    *,
    final: bool,
    files: tuple[File, ...] = (),
    controls: Controls | None = None,
    marks: Sequence[Controls | None] = (),
) -> list[Step]:
    """Every step `next_step` takes to reach `wanted`, each assumed to succeed."""
    now, has = list(shown), _marks(shown, marks)
    steps: list[Step] = []
    while (
        step := next_step(now, wanted, final=final, files=files, controls=controls, marks=has)
    ) is not None:
        steps.append(step)
        if step.kind is Kind.POST:
            now.append(step.text)
            has.append(step.controls)
        elif step.kind is Kind.EDIT:
            now[step.index], has[step.index] = step.text, step.controls
        else:
            del now[step.index], has[step.index]
        if step.files:
            files = ()
    return steps
