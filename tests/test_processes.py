"""Two real `teambot run` processes on one PostgreSQL database, Slack over HTTP.

A load balancer may hand any event to either process, and Slack's retry of it to the
other; one conversation's messages may land on both. Each question must be answered
once, replies in one conversation must start in arrival order and never overlap, and
a process killed with SIGKILL must not block the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes.mistral import FakeMistral
from tests.fakes.processes import BalancedSlack, Bots
from tests.fakes.slack.server import FakeSlack
from tests.helpers import prompt_text
from tests.test_store import POSTGRES_URL, drop_schema

pytestmark = pytest.mark.timeout(120)


@pytest_asyncio.fixture
async def database() -> AsyncIterator[str]:
    """A DATABASE_URL for a fresh schema of the machine's PostgreSQL."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with contextlib.suppress(Exception):
        await drop_schema(schema)


@pytest_asyncio.fixture
async def world(database: str, tmp_path: Path) -> AsyncIterator[Bots]:
    async with FakeMistral(token_interval=0.01, default_tokens=30) as model:
        slack = BalancedSlack(limits=False)
        await slack.start()
        bots = Bots(model, slack, database, tmp_path)
        try:
            yield bots
        finally:
            await bots.stop()
            await slack.stop()
            for n in range(len(bots.processes)):
                assert "Traceback" not in bots.log(n), bots.log(n)[-3000:]


async def until(check: Any, what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def answers_to(slack: FakeSlack, channel: str, question: str) -> list[str]:
    """The bot's finished messages in `channel` (any thread) that answer `question`."""
    return [
        m.text
        for m in slack.messages.values()
        if m.is_bot and not m.deleted and m.channel == channel and question in m.text
    ]


async def test_events_balanced_and_redelivered_across_two_processes_are_answered_once(world):
    await world.start(2)
    slack = world.slack
    slack.redeliver = True
    questions = [(f"C{n % 3}", f"question {n:02d}") for n in range(12)]
    for channel, text in questions:
        slack.add_channel(channel)
        slack.user_message("U1", channel, f"<@{slack.bot_user_id}> {text}")
    for channel, text in questions:
        await until(lambda c=channel, t=text: answers_to(slack, c, t), f"an answer to {text}")
    await asyncio.sleep(1.0)  # time for any duplicate to show up
    for channel, text in questions:
        assert len(answers_to(slack, channel, text)) == 1, text
    # Each question reached the model once, whichever process took it.
    asked = [m for m in world.model.requests if "question " in str(m["messages"][-1])]
    assert len(asked) == len(questions)
    # Both processes did take events (the balancer alternates) and acked them.
    assert {status for _, status in slack.statuses_seen} == {200}
    for url in slack.urls:  # each mention comes as app_mention and message, and again
        assert sum(1 for to, _ in slack.statuses_seen if to == url) >= 2 * len(questions)


async def _stored_questions(database: str) -> list[str]:
    """The questions' texts in the order the store holds them (their row ids)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        rows = await (
            await conn.execute("SELECT text FROM messages WHERE role = 'user' ORDER BY id")
        ).fetchall()
    return [row[0] for row in rows]


def _never_overlap(model: FakeMistral) -> None:
    """Requests of one conversation: each stream ended before the next one began."""
    edges = sorted(
        [(t, "start") for t in model.request_times] + [(t, "end") for t in model.last_token_times]
    )
    kinds = [kind for _, kind in edges]
    assert kinds == ["start", "end"] * len(model.request_times), kinds


async def test_one_conversation_across_two_processes_answers_in_order_one_at_a_time(world):
    world.model.token_interval = 0.02  # each answer streams for ~0.6 s
    await world.start(2)
    slack = world.slack
    slack.add_channel("D1", "im")
    texts = [f"step {n} of the plan" for n in range(8)]
    for n, text in enumerate(texts):  # a burst, alternating between the processes
        slack.to = n % 2
        slack.user_message("U1", "D1", text)
        await asyncio.sleep(0.005)
    for text in texts:
        await until(lambda t=text: answers_to(slack, "D1", t), f"the answer to {text!r}")
    _never_overlap(world.model)
    # Replies started in the order the questions were stored (which is the order the
    # conversation shows them in): request k's newest question is stored question k.
    stored = await _stored_questions(world.database)
    assert sorted(stored) == sorted(texts)
    newest = [str(body["messages"][-1]["content"]) for body in world.model.requests]
    assert [next(t for t in texts if t in m) for m in newest] == stored
    for text in texts:
        assert len(answers_to(slack, "D1", text)) == 1


async def test_sigkill_mid_reply_releases_the_conversation_to_the_other_process(world):
    world.model.token_interval = 0.05
    world.model.default_tokens = 400  # 20 s: the first answer is still streaming when killed
    await world.start(2)
    slack = world.slack
    slack.add_channel("D1", "im")
    slack.to = 0
    slack.user_message("U1", "D1", "a long story please")
    await until(lambda: world.model.first_token_times, "the first answer to start")
    slack.to = 1
    slack.user_message("U1", "D1", "and a short one")  # waits for the first to finish
    deadline = time.monotonic() + 10
    while len(await _stored_questions(world.database)) < 2:
        assert time.monotonic() < deadline, "the second question never arrived"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert len(world.model.requests) == 1  # the second waits for the first
    world.model.default_tokens = 5
    os.kill(world.processes[0].pid, signal.SIGKILL)
    await world.processes[0].wait()
    await until(lambda: answers_to(slack, "D1", "and a short one"), "the other to answer")
    assert len(world.model.requests) == 2


async def test_a_setting_changed_through_one_process_applies_in_the_other(world):
    await world.start(2)
    slack = world.slack
    slack.add_channel("D1", "im")
    slack.to = 1
    slack.user_message("U1", "D1", "first question")  # process 1 now has the settings cached
    await until(lambda: answers_to(slack, "D1", "first question"), "the first answer")
    slack.to = 0
    slack.slash_command("/system", "Always answer like a pirate.", "U1", "D1")
    await until(lambda: slack.responses, "the command's answer")
    slack.to = 1
    slack.user_message("U1", "D1", "second question")
    await until(lambda: answers_to(slack, "D1", "second question"), "the second answer")
    first, second = (prompt_text(body) for body in world.model.requests)
    assert "pirate" not in first
    assert "Always answer like a pirate." in second
