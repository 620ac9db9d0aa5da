"""The plan of posts, edits and deletes that turns what is shown into what should be shown.

Pure functions over lists of message texts: `shown` is what each posted message of a
reply shows now, `wanted` what it should show. `next_step` names the one request to
make next and how urgent it is; `plan` lists every step to the end, for tests and
for reading.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from bot.delivery.compose import File


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


def next_step(
    shown: Sequence[str],
    wanted: Sequence[str],
    *,
    final: bool,
    files: tuple[File, ...] = (),
) -> Step | None:
    """The request that brings `shown` closest to `wanted` now, or None when they agree.

    While the answer grows, a new message comes before edits (people read the newest
    text), and earlier messages are finished before the last one grows. Once final,
    messages are fixed in order, extra ones deleted from the end, and `files` ride on
    the last message.
    """
    if not final and len(wanted) > len(shown):
        index = len(shown)
        return Step(Kind.POST, Priority.OVERFLOW if shown else Priority.FIRST, index, wanted[index])
    for index, text in enumerate(wanted):
        last = index == len(wanted) - 1
        with_files = files if final and last else ()
        if index >= len(shown):
            return Step(Kind.POST, _urgency(final, shown), index, text, with_files)
        if text != shown[index]:
            priority = Priority.FINAL if final else Priority.GROW if last else Priority.OVERFLOW
            return Step(Kind.EDIT, priority, index, text, with_files)
    if final and len(shown) > len(wanted):
        return Step(Kind.DELETE, Priority.FINAL, len(shown) - 1)
    if final and files and wanted:
        return Step(Kind.EDIT, Priority.FINAL, len(wanted) - 1, wanted[-1], files)
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
) -> list[Step]:
    """Every step `next_step` takes to reach `wanted`, each assumed to succeed."""
    now = list(shown)
    steps: list[Step] = []
    while (step := next_step(now, wanted, final=final, files=files)) is not None:
        steps.append(step)
        if step.kind is Kind.POST:
            now.append(step.text)
        elif step.kind is Kind.EDIT:
            now[step.index] = step.text
        else:
            del now[step.index]
        if step.files:
            files = ()
    return steps
