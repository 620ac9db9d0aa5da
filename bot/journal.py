"""Replies in progress, so one a crash cut short never looks finished.

Before a reply's first text shows, it is recorded (`replies_in_progress`: the question,
the conversation, the process that owns it), in the transaction that stores its
question. While it shows, the delivery records which platform messages hold it and
what they show, at most every `EVERY_S` and at once for a new message; when it has
landed the row goes. A process killed with SIGKILL leaves its rows behind: when an
adapter registers its `Recoverer` (at start-up, and every `SWEEP_S` while running, for
processes that died meanwhile on a shared PostgreSQL database), each orphaned reply is
edited to end with `CUT_NOTE` and stored as the cut-off answer. Never a second answer,
never a second model request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from bot import tokens
from bot.store import NewMessage, Orphan, Store

log = logging.getLogger("teambot.journal")

EVERY_S = 1.0
SWEEP_S = 30.0
CUT_NOTE = "— cut off: the bot restarted; ask again to continue."


class Recoverer(Protocol):
    async def cut_off(self, orphan: Orphan, note: str) -> str:
        """Make the last of `orphan.refs` show what it shows followed by `note` (cut to
        the platform's limit); return what it showed before. Where the platform cannot
        say, `orphan.shown[-1]` (recorded up to `EVERY_S` earlier) stands in."""
        ...


class Journal:
    """The replies this process shows: the delivery reports their messages here.

    `Store.add_question` records a reply as in progress with its question; `begin`
    says the engine is answering it (a Regenerate, which has no new question, is not
    followed).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._written: dict[int, tuple[tuple[str, ...], tuple[str, ...], float] | None] = {}

    def begin(self, question: int) -> None:
        self._written[question] = None

    async def showing(self, question: int, refs: Sequence[str], shown: Sequence[str]) -> None:
        """The reply's messages now (recorded at once when one is new, else every
        `EVERY_S` at most)."""
        if question not in self._written:
            return
        state = (tuple(refs), tuple(shown))
        last = self._written[question]
        if last is not None and state == last[:2]:
            return
        now = time.monotonic()
        if last is not None and state[0] == last[0] and now - last[2] < EVERY_S:
            return
        self._written[question] = (*state, now)
        await self.store.reply_progress(question, state[0], state[1])

    async def end(self, question: int) -> None:
        """The reply has landed (or was never shown where it could be found again)."""
        if self._written.pop(question, ...) is not ...:
            await self.store.reply_ended(question)


async def recover(store: Store, platform: str, recoverer: Recoverer) -> int:
    """Mark and store every orphaned reply of `platform`; how many there were."""
    orphans = await store.take_orphaned_replies(platform)
    for orphan in orphans:
        if not (orphan.refs and orphan.refs[-1]):
            continue  # nothing of it showed, or not where it can be edited (an interaction)
        shown = list(orphan.shown)
        try:
            shown[-1] = await recoverer.cut_off(orphan, CUT_NOTE)
        except Exception as exc:  # the message may be gone; the store still learns
            log.warning("could not mark a cut-off reply in %s: %s", orphan.conversation, exc)
        if not orphan.answered:
            await store.add_message(await cut_answer(orphan, "\n".join(shown)))
    if orphans:
        log.info("marked %d reply(ies) cut off by a restart on %s", len(orphans), platform)
    return len(orphans)


def with_note(shown: str, note: str, limit: int) -> str:
    """`shown` then `note`, within `limit` characters (the end of `shown` gives way)."""
    room = limit - len(note) - 2
    if len(shown) > room:
        shown = shown[: max(0, room - 1)].rstrip() + "…"
    return f"{shown}\n\n{note}" if shown else note


async def cut_answer(orphan: Orphan, text: str) -> NewMessage:
    """The answer row for what an orphan showed, marked as cut off."""
    text = f"{text}\n\n{CUT_NOTE}" if text else CUT_NOTE
    return NewMessage(
        conversation=orphan.conversation,
        role="assistant",
        author_id="teambot",
        author_name="teambot",
        text=text,
        tokens=await tokens.count_async(text),
        reply_to=orphan.question,
    )


async def sweep(store: Store, recoverers: dict[str, Recoverer], every: float = SWEEP_S) -> None:
    """Recover orphans of processes that die while this one runs (shared PostgreSQL)."""
    while True:
        await asyncio.sleep(every)
        for platform, recoverer in list(recoverers.items()):
            try:
                await recover(store, platform, recoverer)
            except Exception:
                log.exception("recovering cut-off replies on %s failed", platform)
