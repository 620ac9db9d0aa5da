"""The shared delivery: composing, splitting, planning and pacing, without any platform.

The planner and the budgets are pure and tested as such; the scheduler runs against
`Board`, an in-memory surface that records every request and checks every budget
against its own count of what was spent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.delivery import (
    File,
    Limit,
    Refused,
    Scheduler,
    Style,
    Thinking,
    TooLong,
    deliver,
    say,
)
from bot.delivery.budget import SlidingWindow, TokenBucket
from bot.delivery.compose import EMPTY_ANSWER, Controls, View
from bot.delivery.plan import Kind, Priority, Step, next_step, plan
from bot.delivery.split import messages
from bot.types import (
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
    Started,
    TextDelta,
    ThinkingDelta,
    Usage,
)

pytestmark = pytest.mark.timeout(20)

F = File("thinking.md", b"why")


# The planner


def test_streaming_posts_a_new_part_before_editing_the_one_it_outgrew() -> None:
    assert next_step([], ["a"], final=False) == Step(Kind.POST, Priority.FIRST, 0, "a")
    assert next_step(["a"], ["ab"], final=False) == Step(Kind.EDIT, Priority.GROW, 0, "ab")
    step = next_step(["a"], ["ab", "c"], final=False)
    assert step == Step(Kind.POST, Priority.OVERFLOW, 1, "c")
    assert next_step(["a", "c"], ["ab", "c"], final=False) == Step(
        Kind.EDIT, Priority.OVERFLOW, 0, "ab"
    )
    assert next_step(["ab", "c"], ["ab", "c"], final=False) is None


def test_final_fixes_parts_in_order_then_deletes_the_extra_ones() -> None:
    steps = plan(["x", "y", "z"], ["a", "y"], final=True)
    assert steps == [
        Step(Kind.EDIT, Priority.FINAL, 0, "a"),
        Step(Kind.DELETE, Priority.FINAL, 2),
    ]
    assert plan(["a"], ["a", "b", "c"], final=True) == [
        Step(Kind.POST, Priority.FINAL, 1, "b"),
        Step(Kind.POST, Priority.FINAL, 2, "c"),
    ]


def test_files_ride_on_the_last_message_exactly_once() -> None:
    assert plan(["a"], ["a", "b"], final=True, files=(F,)) == [
        Step(Kind.POST, Priority.FINAL, 1, "b", (F,))
    ]
    assert plan(["a"], ["a"], final=True, files=(F,)) == [
        Step(Kind.EDIT, Priority.FINAL, 0, "a", (F,))
    ]
    assert plan(["x", "b"], ["a", "c"], final=True, files=(F,)) == [
        Step(Kind.EDIT, Priority.FINAL, 0, "a"),
        Step(Kind.EDIT, Priority.FINAL, 1, "c", (F,)),
    ]


# What a reply shows

DISCORDISH = Style(limit=50, emphasis="*", note_prefix="-# ", thinking=Thinking.FILE)
SLACKISH = Style(limit=50, emphasis="_", thinking=Thinking.QUOTE)


def test_view_text_at_each_moment() -> None:
    view = View(notes=["big.png was left out"], answer="half", activity="Searching #general")
    assert view.text(DISCORDISH) == "-# big.png was left out\nhalf\n\n*Searching #general*"
    view.footer = "used: search"
    view.finish(ReplyDone("whole answer", cut_off=True, notice="(cut off)"))
    assert view.text(DISCORDISH) == (
        "-# big.png was left out\nwhole answer\n\n*(cut off)*\n\n-# used: search"
    )
    failed = View(answer="")
    failed.finish(ReplyFailed("The model is unavailable."))
    assert failed.text(SLACKISH) == "The model is unavailable."
    empty = View()
    empty.finish(ReplyDone(""))
    assert empty.text(SLACKISH) == f"_{EMPTY_ANSWER}_"


def test_thinking_is_a_file_or_quoted_messages_only_when_asked() -> None:
    done = ReplyDone("answer", thinking="step one\n\nstep two", show_thinking=True)
    view = View()
    view.finish(done)
    assert view.files(DISCORDISH) == (File("thinking.md", b"step one\n\nstep two"),)
    assert view.thinking_messages(DISCORDISH) == ""
    assert view.thinking_messages(SLACKISH) == "**Thinking**\n> step one\n>\n> step two"
    hidden = View()
    hidden.finish(ReplyDone("answer", thinking="secret"))
    assert hidden.files(DISCORDISH) == () and hidden.thinking_messages(SLACKISH) == ""


def test_messages_never_lose_text_and_never_come_back_empty() -> None:
    assert messages("", 100) == [] and messages("  \n", 100) == []
    text = "```py\n" + "\n".join(f"x = {i}" for i in range(40)) + "\n```"
    parts = messages(text, 80)
    assert len(parts) > 1 and all(len(p) <= 80 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)


# Budgets


def test_sliding_window_holds_a_slot_until_per_seconds_after_the_response() -> None:
    budget = SlidingWindow(2, 1.0, margin=0.0)
    budget.acquire(0.0)
    budget.acquire(0.0)
    assert budget.free_at(0.0) == float("inf")  # both in flight: only a response frees one
    budget.release(0.5)
    assert budget.free_at(0.6) == pytest.approx(1.5)
    assert budget.free_at(1.6) == 1.6 and budget.available(1.6) == 1
    assert budget.free_at(1.6, keep=1) == float("inf")


def test_token_bucket_refills_and_keeps_what_it_is_told() -> None:
    bucket = TokenBucket(2, 60, now=0.0)  # one token a second
    assert bucket.free_at(0.0, keep=1) == 0.0
    bucket.acquire(0.0)
    bucket.acquire(0.0)
    assert bucket.free_at(0.0) == pytest.approx(1.0)
    assert bucket.free_at(0.0, keep=1) == pytest.approx(2.0)
    assert bucket.available(10.0) == 2


# The scheduler against an in-memory surface


@dataclass
class Ledger:
    """Every request per scope, to check no budget was ever overspent."""

    limits: dict[str, tuple[int, float]]
    times: dict[str, list[float]] = field(default_factory=dict)

    def spend(self, scopes: Sequence[str]) -> None:
        now = asyncio.get_running_loop().time()
        for scope in scopes:
            count, per = self.limits[scope.partition(":")[0]]
            recent = [t for t in self.times.setdefault(scope, []) if t > now - per]
            assert len(recent) < count, f"{scope} overspent"
            self.times[scope].append(now)


class Board:
    """A surface whose messages are list entries; requests take `delay` seconds."""

    edit_interval = 0.0
    indicate_every = 0.0

    def __init__(self, ledger: Ledger, team: str = "T", style: Style = SLACKISH) -> None:
        self.ledger = ledger
        self.style = style
        self.stream: Any = None
        self.team = team
        self.messages: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.refuse_over = 10_000
        self.refuse_all = False
        self.settled: bool | None = None

    def scopes(self, kind: Kind) -> Sequence[str]:
        if kind is Kind.EDIT:
            return (f"update:{self.team}",)
        return (f"post:{self.team}",) if kind in (Kind.POST, Kind.DELETE) else ()

    async def _request(self, kind: Kind, text: str) -> None:
        self.ledger.spend(self.scopes(kind))
        await asyncio.sleep(0.001)
        if self.refuse_all:
            raise Refused("channel_not_found")
        if len(text) > self.refuse_over:
            raise TooLong("msg_too_long")
        self.log.append((kind.value, text))

    async def post(self, text: str, files: Sequence[File]) -> int:
        await self._request(Kind.POST, text)
        self.messages.append(text)
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str, files: Sequence[File]) -> None:
        await self._request(Kind.EDIT, text)
        self.messages[handle] = text

    async def delete(self, handle: int) -> None:
        await self._request(Kind.DELETE, "")
        self.messages[handle] = "(deleted)"

    async def indicate(self, activity: str) -> bool:
        return False

    async def settle(self, shown: bool) -> None:
        self.settled = shown


def limits(table: dict[str, tuple[int, float]], **policy: Limit) -> Any:
    def limit(scope: str) -> Limit:
        kind = scope.partition(":")[0]
        count, per = table[kind]
        default = Limit(lambda: SlidingWindow(count, per, margin=0.01))
        return policy.get(kind, default)

    return limit


async def events(*items: ReplyEvent, gap: float = 0.005) -> Any:
    for item in items:
        await asyncio.sleep(gap)
        yield item


def words(n: int) -> list[ReplyEvent]:
    return [TextDelta(f"w{i} ") for i in range(n)]


async def test_a_reply_streams_then_lands_whole_and_reports_it_shown() -> None:
    table = {"post": (5, 1.0), "update": (5, 1.0)}
    ledger = Ledger(table)
    scheduler = Scheduler(limits(table))
    board = Board(ledger, style=Style(limit=3800))
    answer = "".join(e.text for e in words(30) if isinstance(e, TextDelta))
    reply = await deliver(scheduler, board, events(*words(30), ReplyDone(answer, usage=Usage())))
    assert board.messages == [answer.strip()]
    assert [kind for kind, _ in board.log].count("post") == 1
    assert len(board.log) >= 2  # it showed text before the end
    assert reply.closed.is_set() and board.settled is True and scheduler.idle()
    await scheduler.close()


async def test_long_answer_splits_and_a_shorter_final_deletes_leftovers() -> None:
    table = {"post": (50, 1.0), "update": (50, 1.0)}
    scheduler = Scheduler(limits(table))
    board = Board(Ledger(table))
    long = " ".join(f"word{i}" for i in range(40))  # ~300 characters: 7 messages of 50
    await deliver(scheduler, board, events(TextDelta(long), ReplyFailed("Stopped.")))
    assert board.messages[0].startswith("word0") and "_Stopped._" in "".join(board.messages)
    board2 = Board(Ledger(table))
    await deliver(
        scheduler, board2, events(TextDelta(long), TextDelta(" more"), ReplyDone("short"))
    )
    shown = [m for m in board2.messages if m != "(deleted)"]
    assert shown == ["short"] and len(board2.messages) > 1
    await scheduler.close()


async def test_finals_are_reserved_so_extra_replies_post_complete() -> None:
    # Two update tokens for five replies: at most two may show partial text, and every
    # one of those still has its final edit paid for.
    table = {"post": (100, 1.0), "update": (2, 60.0)}
    update = Limit(lambda: TokenBucket(2, 0.001), reserve_finals=True)
    ledger = Ledger(table)
    scheduler = Scheduler(limits(table, update=update))
    boards = [Board(ledger) for _ in range(5)]

    async def one(board: Board, i: int) -> None:
        stream = events(*words(10), ReplyDone(f"answer {i}"), gap=0.01)
        await deliver(scheduler, board, stream)

    await asyncio.wait_for(asyncio.gather(*(one(b, i) for i, b in enumerate(boards))), 10)
    assert [b.messages for b in boards] == [[f"answer {i}"] for i in range(5)]
    live = [b for b in boards if len(b.log) > 1]  # posted partial text, then edited
    assert 1 <= len(live) <= 2
    assert all(b.log == [("post", f"answer {i}")] for i, b in enumerate(boards) if b not in live)
    await scheduler.close()


async def test_final_goes_before_growth_when_the_budget_is_short() -> None:
    table = {"post": (100, 1.0), "update": (1, 0.3)}
    scheduler = Scheduler(limits(table))
    grower, finisher = Board(Ledger(table), "A"), Board(Ledger(table), "A")
    ledger = Ledger(table)
    grower.ledger = finisher.ledger = ledger
    slow = asyncio.create_task(deliver(scheduler, grower, events(*words(40), gap=0.02)))
    await asyncio.sleep(0.1)
    done = ReplyDone("first answer")
    fast = await deliver(scheduler, finisher, events(TextDelta("first"), done, gap=0.05))
    assert finisher.messages == ["first answer"] and fast.closed.is_set()
    slow.cancel()
    await scheduler.close()


async def test_too_long_shrinks_the_messages_and_still_lands_every_word() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0)}
    scheduler = Scheduler(limits(table))
    board = Board(Ledger(table), style=Style(limit=3800))
    board.refuse_over = 1500
    text = " ".join(f"w{i}" for i in range(800))
    await deliver(scheduler, board, events(ReplyDone(text)))
    assert len(board.messages) >= 3 and all(len(m) <= 1500 for m in board.messages)
    assert " ".join(board.messages).split() == text.split()
    await scheduler.close()


async def test_a_refused_reply_stops_and_says_why() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0)}
    scheduler = Scheduler(limits(table))
    board = Board(Ledger(table))
    board.refuse_all = True
    reply = await say(scheduler, board, "hello")
    assert reply.error == "channel_not_found" and not reply.visible and board.settled is False
    await scheduler.close()


class Tape:
    """A native stream that records what it was sent; `break_after` appends then fails."""

    def __init__(self, break_after: int = 10_000) -> None:
        self.handle: int | None = None
        self.shown = ""
        self.failed = False
        self.calls: list[str] = []
        self.break_after = break_after

    async def start(self, text: str) -> bool:
        self.handle, self.shown = 0, text
        self.calls.append("start")
        return True

    async def append(self, text: str) -> bool | None:
        if len(self.calls) > self.break_after:
            return False
        self.calls.append("append")
        self.shown = text
        return True

    async def finish(self, text: str) -> bool:
        self.calls.append("stop")
        self.failed, self.shown = True, text
        return True

    async def abandon(self) -> None:
        self.calls.append("abandon")
        self.failed = True


async def test_native_stream_starts_appends_and_stops_then_posts_thinking() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0)}
    scheduler = Scheduler(limits(table))
    board = Board(Ledger(table))
    board.stream = tape = Tape()
    board.messages.append("streamed")  # the stream's message, handle 0
    done = ReplyDone("w0 w1 w2 w3 w4 w5", thinking="hmm", show_thinking=True)
    await deliver(scheduler, board, events(*words(6), ThinkingDelta("hmm"), done))
    assert tape.calls[0] == "start" and tape.calls[-1] == "stop" and "append" in tape.calls
    assert tape.shown == "w0 w1 w2 w3 w4 w5"
    assert board.log == [("post", "**Thinking**\n> hmm")]  # after the stream, as a message
    await scheduler.close()


async def test_a_broken_stream_is_finished_by_editing_its_message() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0)}
    scheduler = Scheduler(limits(table))
    board = Board(Ledger(table))
    board.stream = tape = Tape(break_after=1)
    board.messages.append("streamed")
    await deliver(scheduler, board, events(*words(8), ReplyDone("the whole answer")))
    assert "abandon" in tape.calls and "stop" not in tape.calls
    assert board.messages == ["the whole answer"]  # the streamed message, edited
    await scheduler.close()


async def test_the_indicator_waits_for_the_model_and_stops_once_text_shows() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0)}
    scheduler = Scheduler(limits(table))
    board = Board(Ledger(table))
    board.indicate_every = 0.05
    shown_at: list[float] = []

    async def indicate(activity: str) -> bool:
        shown_at.append(asyncio.get_running_loop().time())
        return True

    board.indicate = indicate  # type: ignore[method-assign]

    async def slow_model() -> Any:
        await asyncio.sleep(0.1)  # queued behind another reply: nothing to indicate yet
        assert shown_at == []
        yield Started()
        await asyncio.sleep(0.3)  # the model thinks: the indicator is renewed
        yield TextDelta("hello")
        await asyncio.sleep(0.2)
        yield ReplyDone("hello")

    posted_at: list[float] = []
    post = board.post

    async def timed_post(text: str, files: Sequence[File]) -> int:
        posted_at.append(asyncio.get_running_loop().time())
        return await post(text, files)

    board.post = timed_post  # type: ignore[method-assign]
    await deliver(scheduler, board, slow_model())
    assert board.messages == ["hello"]
    assert 4 <= len(shown_at) <= 8, shown_at  # ~0.3 s at one per 0.05 s
    assert max(shown_at) < posted_at[0]  # none once the text showed
    await scheduler.close()


class StreamBoard(Board):
    """A board whose native stream's start and stop spend an "edges" budget."""

    def scopes(self, kind: Kind) -> Sequence[str]:
        if kind in (Kind.START, Kind.STOP, Kind.ABANDON):
            return ("edges:T",)
        return super().scopes(kind)


async def test_without_budget_for_a_native_stream_the_text_still_streams_by_edits() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0), "edges": (1, 60.0)}
    # One start/stop token, and a stream must keep one back for its own stop: none may start.
    edges = Limit(lambda: TokenBucket(1, 0.001), reserve_finals=True)
    scheduler = Scheduler(limits(table, edges=edges))
    board = StreamBoard(Ledger(table), style=Style(limit=3800))
    board.stream = tape = Tape()
    answer = "".join(e.text for e in words(20) if isinstance(e, TextDelta))
    await deliver(scheduler, board, events(*words(20), ReplyDone(answer), gap=0.01))
    assert tape.calls == []
    assert board.messages == [answer.strip()]
    assert board.log[0][0] == "post" and len(board.log) >= 2  # shown early, then edited
    await scheduler.close()


# Controls: the buttons under a reply's last message

STOP = Controls(7, stop=True)
DONE = Controls(7, regenerate=True, feedback=True)


def test_controls_ride_on_the_last_message_and_move_when_the_reply_grows() -> None:
    step = next_step([], ["a"], final=False, controls=STOP)
    assert step == Step(Kind.POST, Priority.FIRST, 0, "a", controls=STOP)
    # Growing into a second message: the new one carries them, then the first loses them
    # in the edit that finishes its text.
    assert next_step(["a"], ["ab", "c"], final=False, controls=STOP, marks=[STOP]) == Step(
        Kind.POST, Priority.OVERFLOW, 1, "c", controls=STOP
    )
    assert next_step(
        ["a", "c"], ["ab", "c"], final=False, controls=STOP, marks=[STOP, STOP]
    ) == Step(Kind.EDIT, Priority.OVERFLOW, 0, "ab")
    # Even with its text unchanged, a message with the wrong controls needs an edit.
    assert next_step(["a", "c"], ["a", "c"], final=False, controls=STOP, marks=[STOP, STOP]) == (
        Step(Kind.EDIT, Priority.OVERFLOW, 0, "a")
    )
    assert next_step(["a", "c"], ["a", "c"], final=False, controls=STOP, marks=[None, STOP]) is None


def test_the_final_edit_carries_the_change_of_controls() -> None:
    assert plan(["half"], ["whole"], final=True, controls=DONE, marks=[STOP]) == [
        Step(Kind.EDIT, Priority.FINAL, 0, "whole", controls=DONE)
    ]
    # Same text, other buttons: one edit for the buttons alone.
    assert plan(["whole"], ["whole"], final=True, controls=DONE, marks=[STOP]) == [
        Step(Kind.EDIT, Priority.FINAL, 0, "whole", controls=DONE)
    ]
    # A shorter final: the last kept message gets them, the extra one goes.
    assert plan(["x", "y"], ["z"], final=True, controls=DONE, marks=[None, STOP]) == [
        Step(Kind.EDIT, Priority.FINAL, 0, "z", controls=DONE),
        Step(Kind.DELETE, Priority.FINAL, 1),
    ]


def test_which_controls_a_view_shows() -> None:
    buttons = Style(limit=50, buttons=True)
    view = View(answer="half", question=3)
    assert view.controls(buttons) == Controls(3, stop=True)
    assert view.controls(SLACKISH) is None  # a surface without buttons gets none
    view.finish(ReplyDone("whole", question=3, answer=4))
    assert view.controls(buttons) == Controls(3, regenerate=True, feedback=True)
    failed = View(question=3)
    failed.finish(ReplyFailed("The model is unavailable."))
    assert failed.controls(buttons) == Controls(3, regenerate=True)
    command = View()
    command.finish(ReplyDone("a command's answer"))
    assert command.controls(buttons) is None  # no question, nothing to act on


class ButtonBoard(Board):
    """A board with buttons: it records the controls each message carries."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger, style=Style(limit=50, buttons=True))
        self.controls: list[Controls | None] = []
        self.edits: list[tuple[int, Controls | None]] = []

    async def post(  # type: ignore[override]
        self, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> int:
        handle = await super().post(text, files)
        self.controls.append(controls)
        return handle

    async def edit(  # type: ignore[override]
        self, handle: int, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> None:
        await super().edit(handle, text, files)
        self.controls[handle] = controls
        self.edits.append((handle, controls))


async def test_a_streamed_reply_shows_stop_then_regenerate_and_feedback() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0)}
    scheduler = Scheduler(limits(table))
    board = ButtonBoard(Ledger(table))
    seen: list[Controls | None] = []
    post = board.post

    async def watched(text: str, files: Sequence[File], **kw: Any) -> int:
        seen.append(kw.get("controls"))
        return int(await post(text, files, **kw))

    board.post = watched  # type: ignore[method-assign]
    long = " ".join(f"w{i}" for i in range(30))  # ~140 characters: three messages of 50
    stream = events(Started(question=9), TextDelta("hello "), TextDelta(long))
    reply = await deliver(scheduler, board, _then(stream, ReplyDone(long, question=9, answer=10)))
    assert seen[0] == Controls(9, stop=True)  # the first text already has Stop
    assert len(board.messages) >= 3
    done = Controls(9, regenerate=True, feedback=True)
    assert board.controls == [None] * (len(board.messages) - 1) + [done]
    assert reply.answer_id == 10
    await scheduler.close()


async def test_controls_cost_no_extra_request_and_commands_get_none() -> None:
    table = {"post": (100, 1.0), "update": (100, 1.0)}
    scheduler = Scheduler(limits(table))
    board = ButtonBoard(Ledger(table))
    shown = asyncio.Event()
    post = board.post

    async def watched(text: str, files: Sequence[File], **kw: Any) -> int:
        handle = int(await post(text, files, **kw))
        shown.set()
        return handle

    board.post = watched  # type: ignore[method-assign]

    async def model() -> Any:
        yield Started(question=5)
        yield TextDelta("short")
        await shown.wait()  # the partial text is shown before the answer completes
        yield ReplyDone("short answer", question=5)

    await deliver(scheduler, board, model())
    assert board.messages == ["short answer"]
    assert board.log == [("post", "short"), ("edit", "short answer")]  # buttons rode along
    assert board.controls == [Controls(5, regenerate=True, feedback=True)]
    plain = ButtonBoard(Ledger(table))
    await say(scheduler, plain, "a command's answer")
    assert plain.controls == [None] and plain.edits == []
    # A surface without buttons is never handed any (Board's methods take no such keyword).
    other = Board(Ledger(table))
    await deliver(scheduler, other, events(Started(question=5), ReplyDone("x", question=5)))
    assert other.messages == ["x"]
    await scheduler.close()


async def _then(first: Any, *rest: ReplyEvent) -> Any:
    async for item in first:
        yield item
    for item in rest:
        await asyncio.sleep(0.005)
        yield item
