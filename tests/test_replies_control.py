"""Stop, Regenerate, feedback and listening (bot/control.py), through the real engine.

The real Mistral client talks to the loopback fake Mistral; stores are real SQLite files
and, for the store contract and the two-process stop, real PostgreSQL schemas.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

from bot.control import COMPLETE, GONE, NO_ANSWER, TOO_OLD, WAIT
from bot.engine import Engine
from bot.store import NewMessage, Vote
from bot.types import (
    Author,
    ConversationKey,
    Message,
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
    Started,
    TextDelta,
)
from tests.fakes.mistral import FakeMistral, Reply
from tests.helpers import ALICE, BOB, collect, final, key, message, prompt_text, streamed_text
from tests.test_cluster import _engine, schema  # noqa: F401  (a fixture)
from tests.test_store import (  # noqa: F401  (place and store are fixtures)
    POSTGRES_URL,
    open_backend,
    place,
    store,
)

CAROL = Author("U3", "Carol", platform_admin=True)  # a Discord server manager, say
LONG = " ".join(f"word{n}" for n in range(300))


def watch_disconnects(fake: FakeMistral) -> list[BaseException]:
    """What the fake saw when a client closed a stream it was still writing."""
    closed: list[BaseException] = []
    original = fake._stream

    async def stream(request: Any, body: dict[str, Any], scripted: Any) -> Any:
        try:
            return await original(request, body, scripted)
        except (ConnectionError, asyncio.CancelledError) as exc:
            closed.append(exc)
            raise

    fake._stream = stream  # type: ignore[method-assign]
    return closed


async def eventually(check: Callable[[], Awaitable[bool] | bool]) -> None:
    for _ in range(500):
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it never happened")


def question_of(events: list[ReplyEvent]) -> int:
    started = next(e for e in events if isinstance(e, Started))
    assert started.question > 0
    return started.question


async def stop_midway(
    engine: Engine, msg: Message, stopper: Callable[[int], Awaitable[str]]
) -> tuple[list[ReplyEvent], list[str]]:
    """Run the reply to `msg` and call `stopper(question)` once some text has streamed."""
    events: list[ReplyEvent] = []
    said: list[str] = []
    async for event in engine.reply(msg):
        events.append(event)
        if isinstance(event, TextDelta) and not said and len(streamed_text(events)) > 30:
            said.append(await stopper(question_of(events)))
    return events, said


def outcomes(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT outcome FROM usage ORDER BY id")]


# Stop


async def test_the_asker_stops_a_reply_mid_stream(make_engine, fake_mistral, tmp_path):
    engine = await make_engine()
    closed = watch_disconnects(fake_mistral)
    fake_mistral.token_interval = 0.01
    fake_mistral.enqueue(Reply(LONG))
    events, said = await stop_midway(
        engine, message("tell me a long story"), lambda q: engine.stop(q, ALICE)
    )
    assert said == ["Stopped. What was written so far is kept."]
    done = final(events)
    assert isinstance(done, ReplyDone)
    assert done.cut_off and done.notice == "(Stopped by Alice.)"
    assert 30 < len(done.text) < len(LONG) and LONG.startswith(done.text)
    assert done.text == streamed_text(events)
    await eventually(lambda: bool(closed))  # the fake's write met a closed connection
    rows = await engine.store.messages(str(key()))
    assert [(r.role, r.text) for r in rows] == [
        ("user", "tell me a long story"),
        ("assistant", done.text),
    ]
    assert done.question == rows[0].id and done.answer == rows[1].id
    asked = await engine.store.asked(done.question)
    assert asked is not None and asked.stopped_by == "Alice"
    assert outcomes(tmp_path / "teambot.db") == ["stopped"]
    assert await engine.stop(done.question, ALICE) == COMPLETE


async def test_someone_else_may_not_stop_it_but_an_admin_may(make_engine, fake_mistral):
    engine = await make_engine()
    fake_mistral.token_interval = 0.005
    fake_mistral.enqueue(Reply(LONG), Reply(LONG), Reply(LONG))
    events, said = await stop_midway(engine, message("one"), lambda q: engine.stop(q, BOB))
    assert said == ["Only Alice, who asked, or an admin can stop this answer."]
    done = final(events)
    assert isinstance(done, ReplyDone) and not done.cut_off and done.text == LONG

    events, said = await stop_midway(engine, message("two"), lambda q: engine.stop(q, CAROL))
    done = final(events)
    assert isinstance(done, ReplyDone) and done.notice == "(Stopped by Carol.)"

    # The adapter's own word for a platform admin (e.g. Discord's Manage Messages).
    events, said = await stop_midway(
        engine, message("three"), lambda q: engine.stop(q, BOB, admin=True)
    )
    done = final(events)
    assert isinstance(done, ReplyDone) and done.notice == "(Stopped by Bob.)"


async def test_a_listed_admin_may_stop_and_unknown_questions_are_gone(make_engine, fake_mistral):
    engine = await make_engine(admin_ids=("U2",))
    fake_mistral.token_interval = 0.005
    fake_mistral.enqueue(Reply(LONG))
    events, _ = await stop_midway(engine, message("one"), lambda q: engine.stop(q, BOB))
    done = final(events)
    assert isinstance(done, ReplyDone) and done.notice == "(Stopped by Bob.)"
    assert await engine.stop(10_000, ALICE) == GONE


async def test_a_question_stopped_while_it_waits_never_reaches_the_model(make_engine, fake_mistral):
    engine = await make_engine()
    fake_mistral.token_interval = 0.01
    fake_mistral.enqueue(Reply(LONG))
    first, second = message("first"), message("second")
    first_events: list[ReplyEvent] = []

    async def run_first() -> None:
        async for event in engine.reply(first):
            first_events.append(event)

    running = asyncio.create_task(run_first())
    await eventually(lambda: any(isinstance(e, TextDelta) for e in first_events))
    waiting = asyncio.create_task(collect(engine, second))
    await eventually(lambda: len(engine.replies._pending) == 2)
    rows = await engine.store.messages(str(key()))
    second_id = next(r.id for r in rows if r.text == "second")
    assert await engine.stop(second_id, ALICE) == "Stopped. What was written so far is kept."
    await running
    done = final(await waiting)
    assert isinstance(done, ReplyDone) and done.text == "" and done.notice == "(Stopped by Alice.)"
    assert len(fake_mistral.requests) == 1  # only the first question was asked


async def test_stop_reaches_a_reply_running_in_another_process(schema, fake_mistral, tmp_path):  # noqa: F811
    first = await open_backend("postgres", schema)
    second = await open_backend("postgres", schema)
    a = await _engine(first, fake_mistral, tmp_path)
    b = await _engine(second, fake_mistral, tmp_path)
    closed = watch_disconnects(fake_mistral)
    try:
        fake_mistral.token_interval = 0.01
        fake_mistral.enqueue(Reply(LONG))
        events, said = await stop_midway(a, message("long one"), lambda q: b.stop(q, ALICE))
        assert said == ["Stopping it. What was written so far is kept."]
        done = final(events)
        assert isinstance(done, ReplyDone) and done.notice == "(Stopped by Alice.)"
        assert len(done.text) < len(LONG)
        await eventually(lambda: bool(closed))
        asked = await second.asked(done.question)
        assert asked is not None and asked.answer is not None
        assert asked.answer.text == done.text and asked.stopped_by == "Alice"
        assert await b.stop(done.question, ALICE) == COMPLETE

        async def turn_left() -> bool:
            now = await second.asked(done.question)
            return now is not None and not now.running

        await eventually(turn_left)
    finally:
        await a.aclose()
        await b.aclose()


# Regenerate


async def test_regenerate_replaces_the_answer_and_the_next_prompt_sees_only_the_new_one(
    engine, fake_mistral
):
    done = final(await collect(engine, message("first question")))
    assert isinstance(done, ReplyDone) and done.text == "echo: first question"
    fake_mistral.enqueue(Reply("a better answer"))
    events = [event async for event in engine.regenerate(done.question, ALICE)]
    again = final(events)
    assert isinstance(again, ReplyDone) and again.text == "a better answer"
    assert question_of(events) == again.question == done.question
    assert again.answer not in (0, done.answer)
    regen_prompt = prompt_text(fake_mistral.requests[-1])
    assert "first question" in regen_prompt and "echo: first question" not in regen_prompt

    rows = await engine.store.messages(str(key()))
    assert [(r.id, r.text) for r in rows] == [
        (done.question, "first question"),
        (again.answer, "a better answer"),
    ]
    versions = await engine.store.answer_versions(done.question)
    assert [(v.id, v.text) for v in versions] == [(done.answer, "echo: first question")]

    await collect(engine, message("second question"))
    lines = prompt_text(fake_mistral.requests[-1]).splitlines()
    assert "a better answer" in lines and "echo: first question" not in lines


async def test_regenerating_an_earlier_answer_uses_only_what_came_before_it(engine, fake_mistral):
    one = final(await collect(engine, message("question one")))
    two = final(await collect(engine, message("question two")))
    assert isinstance(one, ReplyDone) and isinstance(two, ReplyDone)
    fake_mistral.enqueue(Reply("one, redone"))
    again = final([e async for e in engine.regenerate(one.question, ALICE)])
    assert isinstance(again, ReplyDone)
    prompt = prompt_text(fake_mistral.requests[-1])
    assert "question one" in prompt
    assert "question two" not in prompt and "echo: question one" not in prompt
    rows = await engine.store.messages(str(key()))
    assert [r.text for r in rows] == [
        "question one",
        "one, redone",
        "question two",
        "echo: question two",
    ]


async def test_regenerate_keeps_the_question_s_own_reasoning(engine, fake_mistral):
    done = final(await collect(engine, message("think: a hard one")))
    assert isinstance(done, ReplyDone)
    assert fake_mistral.requests[-1]["reasoning_effort"] == "high"
    final([e async for e in engine.regenerate(done.question, ALICE)])
    assert fake_mistral.requests[-1]["reasoning_effort"] == "high"
    plain = final(await collect(engine, message("an easy one")))
    assert isinstance(plain, ReplyDone)
    final([e async for e in engine.regenerate(plain.question, ALICE)])
    assert fake_mistral.requests[-1]["reasoning_effort"] == "none"


async def test_regenerate_is_refused_to_others_and_while_the_answer_runs(engine, fake_mistral):
    done = final(await collect(engine, message("mine")))
    assert isinstance(done, ReplyDone)
    refused = [e async for e in engine.regenerate(done.question, BOB)]
    assert refused == [
        ReplyFailed("Only Alice, who asked, or an admin can regenerate this answer.")
    ]
    by_admin = final([e async for e in engine.regenerate(done.question, CAROL)])
    assert isinstance(by_admin, ReplyDone)
    assert [e async for e in engine.regenerate(10_000, ALICE)] == [ReplyFailed(GONE)]

    fake_mistral.token_interval = 0.01
    fake_mistral.enqueue(Reply(LONG))
    events: list[ReplyEvent] = []
    refusals: list[list[ReplyEvent]] = []
    async for event in engine.reply(message("slow")):
        events.append(event)
        if isinstance(event, TextDelta) and not refusals:
            q = question_of(events)
            refusals.append([e async for e in engine.regenerate(q, ALICE)])
    assert refusals == [[ReplyFailed(WAIT)]]
    assert isinstance(final(events), ReplyDone)


async def test_regenerate_after_a_restart(make_engine, fake_mistral, tmp_path):
    db = tmp_path / "restart.db"
    first = await make_engine(db)
    done = final(await collect(first, message("remember this")))
    assert isinstance(done, ReplyDone)
    await first.aclose()
    second = await make_engine(db)
    fake_mistral.enqueue(Reply("remembered, again"))
    again = final([e async for e in second.regenerate(done.question, ALICE)])
    assert isinstance(again, ReplyDone) and again.text == "remembered, again"
    rows = await second.store.messages(str(key()))
    assert [r.text for r in rows] == ["remember this", "remembered, again"]
    versions = await second.store.answer_versions(done.question)
    assert [v.text for v in versions] == ["echo: remember this"]


async def test_a_question_that_left_the_window_is_not_regenerated(engine):
    done = final(await collect(engine, message("old news")))
    assert isinstance(done, ReplyDone)
    await engine.store.set_window_start(str(key()), done.answer + 1)
    assert [e async for e in engine.regenerate(done.question, ALICE)] == [ReplyFailed(TOO_OLD)]


# Feedback


async def test_feedback_is_one_vote_per_person_and_changes(engine):
    done = final(await collect(engine, message("rate me")))
    assert isinstance(done, ReplyDone)
    assert await engine.feedback(done.question, BOB, 1) == (
        "Thanks for the 👍. One vote per person: 👎 changes it."
    )
    assert await engine.feedback(done.question, BOB, 1) == (
        "Your 👍 was already noted. One vote per person: 👎 changes it."
    )
    assert (
        await engine.feedback(done.question, BOB, -1) == "Changed your vote on this answer to 👎."
    )
    await engine.feedback(done.question, ALICE, -1)
    report = await engine.store.feedback_report(since=0)
    assert sum(day[1] for day in report.days) == 0 and sum(day[2] for day in report.days) == 2
    assert [(r.answer, r.up, r.down, r.text) for r in report.worst] == [
        (done.answer, 0, 2, "echo: rate me")
    ]
    row = await engine.store.add_question(
        "answer:x", NewMessage(str(key()), "user", "U1", "A", "q", 1)
    )
    assert row is not None
    assert await engine.feedback(row.id, BOB, 1) == NO_ANSWER


async def test_answer_posted_gives_the_answer_its_platform_id(engine):
    done = final(await collect(engine, message("link me")))
    assert isinstance(done, ReplyDone)
    assert await engine.answer_posted(done.answer, "1234.5678")
    asked = await engine.store.asked(done.question)
    assert asked is not None and asked.answer is not None
    assert asked.answer.platform_id == "1234.5678"
    assert not await engine.answer_posted(done.question + 10_000, "1")


# Listening


async def test_listen_is_a_channel_setting_its_threads_share(engine):
    channel = ConversationKey("slack", "T1", "C1")
    thread = ConversationKey("slack", "T1", "C1", "111.222")
    other = ConversationKey("slack", "T1", "C2")
    assert not await engine.listening(channel)
    refused = await engine.command(thread, BOB, "listen", "on")
    assert refused.private and "Only admins" in refused.text
    result = await engine.command(thread, CAROL, "listen", "on")
    assert "**on**" in result.text and not result.private
    assert await engine.listening(channel) and await engine.listening(thread)
    assert not await engine.listening(other)
    shown = await engine.command(channel, BOB, "listen", "")
    assert shown.private and "**on**" in shown.text
    await engine.command(channel, CAROL, "listen", "off")
    assert not await engine.listening(thread)
    assert (await engine.command(channel, CAROL, "listen", "maybe")).text == (
        "Use `listen on` or `listen off`."
    )


# The store's side, on both backends


def _msg(conv: str, role: str, text: str, **kw: Any) -> NewMessage:
    return NewMessage(conv, role, "U1" if role == "user" else "teambot", "Alice", text, 3, **kw)


async def test_store_replaces_answers_and_keeps_versions(store):  # noqa: F811
    conv = "slack:T1:C1:"
    q = await store.add_question("answer:q", _msg(conv, "user", "why?", platform_id="1.1"))
    assert q is not None
    old = await store.add_message(_msg(conv, "assistant", "because", reply_to=q.id))
    assert old is not None
    await store.note_reply(q.id, conv, reasoning=True)
    await store.note_reply(q.id, conv, stopped_by="Bob")
    asked = await store.asked(q.id)
    assert asked is not None and asked.answer is not None
    assert (asked.answer.id, asked.reasoning, asked.stopped_by) == (old, True, "Bob")
    assert await store.asked(old) is None  # an answer is not a question

    new = await store.replace_answer(q.id, _msg(conv, "assistant", "because, v2", reply_to=q.id))
    assert new > old
    assert [m.text for m in await store.messages(conv)] == ["why?", "because, v2"]
    assert [m.text for m in (await store.window(conv))[1]] == ["why?", "because, v2"]
    assert [(v.id, v.text) for v in await store.answer_versions(q.id)] == [(old, "because")]
    asked = await store.asked(q.id)
    assert asked is not None and asked.answer is not None and asked.answer.id == new

    assert await store.answer_posted(new, "1.2")
    assert not await store.answer_posted(new, "1.1")  # the question has that id here
    await store.forget(conv)
    assert await store.answer_versions(q.id) == []


async def test_store_votes_and_reports(store):  # noqa: F811
    conv = "discord:G1:C1:"
    q = await store.add_question("answer:v", _msg(conv, "user", "hm"))
    assert q is not None
    a = await store.add_message(_msg(conv, "assistant", "answer text", reply_to=q.id))
    assert a is not None
    assert await store.vote(Vote(a, q.id, conv, "discord", "U2", 1)) is None
    assert await store.vote(Vote(a, q.id, conv, "discord", "U2", -1)) == 1
    assert await store.vote(Vote(a, q.id, conv, "discord", "U3", -1)) is None
    report = await store.feedback_report(since=0, worst=5)
    assert [(up, down) for _, up, down in report.days] == [(0, 2)]
    assert [(r.answer, r.conversation, r.down, r.text) for r in report.worst] == [
        (a, conv, 2, "answer text")
    ]
    await store.forget_user("discord", "U2")
    report = await store.feedback_report(since=0)
    assert [(up, down) for _, up, down in report.days] == [(0, 1)]


async def test_enter_turn_queues_an_existing_question(store):  # noqa: F811
    conv = "slack:T1:C9:"
    q = await store.add_question("answer:t", _msg(conv, "user", "again"))
    assert q is not None
    async with store.cluster.turn(conv, q.id) as waited:
        assert waited is False
    await store.enter_turn(conv, q.id)
    queued = await store.asked(q.id)
    assert queued is not None
    assert queued.running == (type(store).__name__ == "PostgresStore")  # SQLite: in memory
    async with store.cluster.turn(conv, q.id) as waited:
        assert waited is False
    asked = await store.asked(q.id)
    assert asked is not None and not asked.running


async def test_migrate_brings_votes_versions_and_notes_along(tmp_path):
    from bot import migrate
    from tests.test_migrate import target_url
    from tests.test_store import drop_schema

    schema_name = f"m_{uuid.uuid4().hex[:12]}"
    target = await open_backend("postgres", schema_name)  # skips without a server
    await target.aclose()
    await drop_schema(schema_name)
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema_name}"')
    try:
        source = await open_backend("sqlite", str(tmp_path / "source.db"))
        conv = "slack:T1:C1:"
        q = await source.add_question("answer:m", _msg(conv, "user", "why?"))
        assert q is not None
        await source.add_message(_msg(conv, "assistant", "first try", reply_to=q.id))
        new = await source.replace_answer(q.id, _msg(conv, "assistant", "second", reply_to=q.id))
        await source.note_reply(q.id, conv, reasoning=True, stopped_by="Bob")
        await source.vote(Vote(new, q.id, conv, "slack", "U2", -1))
        await source.aclose()
        url = target_url(schema_name)
        await migrate.prepare(f"sqlite:///{tmp_path / 'source.db'}", url)
        await migrate.migrate(str(tmp_path / "source.db"), url)
        copied = await open_backend("postgres", schema_name)
        try:
            asked = await copied.asked(q.id)
            assert asked is not None and asked.answer is not None
            assert (asked.answer.text, asked.reasoning, asked.stopped_by) == ("second", True, "Bob")
            assert [v.text for v in await copied.answer_versions(q.id)] == ["first try"]
            report = await copied.feedback_report(since=0)
            assert [(r.answer, r.down) for r in report.worst] == [(new, 1)]
        finally:
            await copied.aclose()
    finally:
        await drop_schema(schema_name)
