"""Stop, Regenerate and feedback: what people do to a reply after asking.

Adapters show buttons under a reply that carry only the stored question's row id
(`Started.question`, `ReplyDone.question`), so a click works in any process and after a
restart; the engine's thin `stop`, `regenerate` and `feedback` methods land here.

- Stop (the asker or an admin): a reply streaming in this process has its model stream
  cancelled at once (`Replies`): the HTTP response is closed, the text so far is stored
  and the reply ends with `ReplyDone(cut_off=True, notice="(Stopped by …)")`, its usage
  recorded with outcome "stopped". A reply waiting for its turn, or running its tools,
  stops before its next model call. One running in another process is told through
  the cluster's change news (topic "stop").
- Regenerate (same people): asks again with the context the answer had (the window up
  to its question, the conversation's settings, the question's own reasoning choice),
  in the conversation's turn like any reply, and stores the new answer in place of the
  old, which is kept in `message_versions` and leaves every prompt.
- Feedback (anyone): one 👍 or 👎 per person per answer; the other button changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING

from bot.store import Asked, FeedbackReport, RatedAnswer, Store, Vote
from bot.tools import Links
from bot.types import (
    DM,
    Author,
    ConversationKey,
    Message,
    Place,
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
)

if TYPE_CHECKING:
    from bot.engine import Engine

STOP_TOPIC = "stop"
COMPLETE = "That answer is already complete."
WAIT = "Wait until the answer is complete (or stop it)."
GONE = "I no longer have that question (it was deleted or forgotten)."
TOO_OLD = (
    "That question has left what I remember of this conversation, so I can't redo its "
    "answer; please ask it again."
)
NO_ANSWER = "There is no answer to rate yet."
UP, DOWN = "👍", "👎"


def stopped_notice(name: str) -> str:
    return f"(Stopped by {name}.)"


class Replies:
    """The replies of this process that a Stop can reach, by question id.

    A reply is pending from when the engine takes it until its pipeline starts storing
    it (`finish`); while its model stream is read (`streaming`) a stop cancels that read
    at once, otherwise the pipeline sees `stopped_by` before its next model call.
    """

    def __init__(self) -> None:
        self._pending: set[int] = set()
        self._streams: dict[int, asyncio.Task[object]] = {}
        self._stopped: dict[int, str] = {}

    def begin(self, question: int) -> None:
        self._pending.add(question)

    def end(self, question: int) -> None:
        self._pending.discard(question)
        self._streams.pop(question, None)
        self._stopped.pop(question, None)

    def pending(self, question: int) -> bool:
        return question in self._pending

    @contextlib.contextmanager
    def streaming(self, question: int) -> Iterator[None]:
        """Around the read of a model stream: a stop now cancels the current task there."""
        task = asyncio.current_task()
        if task is not None and question in self._pending:
            self._streams[question] = task
        try:
            yield
        finally:
            self._streams.pop(question, None)

    def stop(self, question: int, name: str) -> bool:
        """Stop the reply to `question` if this process has it pending; whether it had."""
        if question not in self._pending:
            return False
        self._stopped.setdefault(question, name)
        task = self._streams.pop(question, None)
        if task is not None:  # once: a second cancel could land while it stores
            task.cancel()
        return True

    def stopped_by(self, question: int) -> str | None:
        return self._stopped.get(question)

    def finish(self, question: int) -> str | None:
        """The reply is being stored: no stop reaches it now. Who stopped it, if anyone."""
        self._pending.discard(question)
        self._streams.pop(question, None)
        return self._stopped.pop(question, None)

    def news(self, key: str) -> None:
        """Another process was asked to stop a reply ("<question>:<name>")."""
        question, _, name = key.partition(":")
        if question.isdigit():
            self.stop(int(question), name or "someone")


def _may(engine: Engine, asked: Asked, by: Author, admin: bool) -> bool:
    return by.id == asked.question.author_id or admin or engine.is_admin(by)


def _who_may(asked: Asked, verb: str) -> str:
    asker = asked.question.author_name or asked.question.author_id
    return f"Only {asker}, who asked, or an admin can {verb} this answer."


async def stop(engine: Engine, question: int, by: Author, *, admin: bool = False) -> str:
    """Engine.stop: one short sentence for the clicker."""
    asked = await engine.store.asked(question)
    if asked is None:
        return GONE
    if not _may(engine, asked, by, admin):
        return _who_may(asked, "stop")
    if engine.replies.stop(question, by.name):
        return "Stopped. What was written so far is kept."
    if asked.answer is None and asked.running:
        await engine.store.cluster.publish(STOP_TOPIC, f"{question}:{by.name}")
        return "Stopping it. What was written so far is kept."
    return COMPLETE


def message_of(asked: Asked) -> Message:
    """The question as the engine first answered it, rebuilt from the store (its images
    were never stored, so a regenerated answer sees only their names)."""
    row = asked.question
    platform, space, channel, thread = row.conversation.split(":", 3)
    place = None
    if asked.place is not None:
        place_id = asked.place.key.split(":", 2)[2]
        place = Place(place_id, asked.place.name, asked.place.visibility)
    return Message(
        key=ConversationKey(platform, space, channel, thread),
        id=row.platform_id or str(row.id),
        author=Author(row.author_id, row.author_name),
        text=row.text,
        attachments=row.attachments,
        is_group=place is None or place.visibility != DM,
        place=place,
    )


async def regenerate(
    engine: Engine, question: int, by: Author, *, admin: bool = False
) -> AsyncIterator[ReplyEvent]:
    """Engine.regenerate: the new answer's events, or one ReplyFailed saying why not."""
    asked = await engine.store.asked(question)
    refusal = _regenerate_refusal(engine, asked, by, admin)
    if refusal is not None or asked is None:
        yield ReplyFailed(refusal or GONE)
        return
    engine.replies.begin(question)  # before any await: a second click now has to wait
    try:
        await engine.store.enter_turn(asked.question.conversation, question)
    except BaseException:
        engine.replies.end(question)
        raise
    message = message_of(asked)
    queue: asyncio.Queue[ReplyEvent] = asyncio.Queue()
    work = engine._answer(message, asked.question, asked.reasoning, queue.put_nowait, None, True)
    engine._spawn(work)
    while True:
        event = await queue.get()
        yield event
        if isinstance(event, ReplyDone | ReplyFailed):
            return


def _regenerate_refusal(engine: Engine, asked: Asked | None, by: Author, admin: bool) -> str | None:
    if asked is None:
        return GONE
    if not _may(engine, asked, by, admin):
        return _who_may(asked, "regenerate")
    if engine.replies.pending(asked.question.id) or asked.running:
        return WAIT
    if asked.question.id < asked.window_start:
        return TOO_OLD
    if engine._closing:
        return "I'm restarting right now; please try again in a moment."
    return None


async def feedback(engine: Engine, question: int, by: Author, value: int) -> str:
    """Engine.feedback: store a 👍 (+1) or 👎 (-1) on the question's current answer."""
    if value not in (1, -1):
        raise ValueError(f"a vote is +1 or -1, not {value!r}")
    asked = await engine.store.asked(question)
    if asked is None:
        return GONE
    if asked.answer is None:
        return NO_ANSWER
    platform = asked.question.conversation.split(":", 1)[0]
    vote = Vote(asked.answer.id, question, asked.question.conversation, platform, by.id, value)
    before = await engine.store.vote(vote)
    mark, other = (UP, DOWN) if value > 0 else (DOWN, UP)
    if before is None:
        return f"Thanks for the {mark}. One vote per person: {other} changes it."
    if before == value:
        return f"Your {mark} was already noted. One vote per person: {other} changes it."
    return f"Changed your vote on this answer to {mark}."


def listening_key(key: ConversationKey) -> ConversationKey:
    """The channel whose `listen` setting applies to `key` (a thread listens with it)."""
    return ConversationKey(key.platform, key.space, key.channel)


async def feedback_lines(store: Store, days: int, links: Mapping[str, Links]) -> list[str]:
    """`teambot feedback`: 👍/👎 per UTC day, then the worst-rated answers with links."""
    report = await store.feedback_report(since=time.time() - days * 86_400)
    lines = [f"{'day':<10}  {UP:>4}  {DOWN:>4}", "-" * 22]
    lines += [f"{day:<10}  {up:>4}  {down:>4}" for day, up, down in report.days]
    ups, downs = sum(d[1] for d in report.days), sum(d[2] for d in report.days)
    lines += ["-" * 22, f"{'total':<10}  {ups:>4}  {downs:>4}", ""]
    lines.append(_worst_title(report, days))
    for rated in report.worst:
        lines.append(
            f"{rated.up - rated.down:+d} ({rated.up} {UP} {rated.down} {DOWN})  "
            f"{_where(rated, links)}  {_excerpt(rated.text)}"
        )
    return lines


def _worst_title(report: FeedbackReport, days: int) -> str:
    if not report.worst:
        return f"No answer got a {DOWN} in the last {days} days."
    return f"Worst-rated answers, last {days} days:"


def _where(rated: RatedAnswer, links: Mapping[str, Links]) -> str:
    platform = rated.conversation.split(":", 1)[0]
    found = links.get(platform)
    if found is not None and rated.platform_id:
        link = found.permalink(rated.conversation, rated.platform_id)
        if link:
            return link
    return f"{rated.conversation} answer #{rated.answer}"


def _excerpt(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return f"“{flat if len(flat) <= width else flat[: width - 1] + '…'}”"
