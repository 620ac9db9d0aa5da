"""The store contract. Every backend must pass these; add it to `BACKENDS`."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.store import NewMessage, Store, UsageRecord
from bot.store.sqlite import SQLiteStore

BACKENDS = ["sqlite", "postgres"]
# The machine's own PostgreSQL (trust auth); tests skip the backend where none runs.
POSTGRES_URL = os.environ.get(
    "TEAMBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def open_backend(name: str, place: str) -> Store:
    """Open backend `name` at `place` (a SQLite path, or a PostgreSQL schema name)."""
    if name == "sqlite":
        return await SQLiteStore.open(place)
    from bot.store.postgres import PostgresStore

    try:
        return await PostgresStore.open(POSTGRES_URL, schema=place)
    except Exception as exc:  # no server here: say so rather than fail
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")


async def drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest_asyncio.fixture(params=BACKENDS)
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(backend name, where its data lives), cleaned up after the test."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "store.db")
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield "postgres", schema
    with contextlib.suppress(Exception):
        await drop_schema(schema)


@pytest_asyncio.fixture
async def store(place: tuple[str, str]) -> AsyncIterator[Store]:
    backend = await open_backend(*place)
    yield backend
    await backend.aclose()


def msg(conv: str, text: str, platform_id: str | None = None, **kw: object) -> NewMessage:
    return NewMessage(
        conv, kw.pop("role", "user"), "U1", "Alice", text, len(text), platform_id, **kw
    )  # type: ignore[arg-type]


async def test_messages_round_trip_in_order(store):
    ids = [await store.add_message(msg("c", f"text {n}", f"p{n}")) for n in range(3)]
    assert all(isinstance(i, int) for i in ids)
    rows = await store.messages("c")
    assert [r.text for r in rows] == ["text 0", "text 1", "text 2"]
    assert rows[0].author_name == "Alice" and rows[0].platform_id == "p0"


async def test_platform_id_unique_per_conversation(store):
    assert await store.add_message(msg("c", "a", "same")) is not None
    assert await store.add_message(msg("c", "b", "same")) is None
    assert await store.add_message(msg("other", "b", "same")) is not None
    assert await store.add_message(msg("c", "no id 1")) is not None
    assert await store.add_message(msg("c", "no id 2")) is not None  # NULL ids never clash


async def test_reply_sorts_after_the_message_it_answers(store):
    q1 = await store.add_message(msg("c", "q1", "1"))
    await store.add_message(msg("c", "q2", "2"))
    await store.add_message(msg("c", "a1", role="assistant", reply_to=q1))
    assert [r.text for r in await store.messages("c")] == ["q1", "a1", "q2"]
    assert [r.text for r in await store.messages("c", to_id=q1)] == ["q1", "a1"]


async def test_edit_delete_and_forget(store):
    await store.add_message(msg("c", "before", "x"))
    await store.add_message(msg("d", "keep", "y"))
    assert await store.update_message("c", "x", "after", 5)
    assert not await store.update_message("c", "missing", "z", 1)
    [found] = await store.messages("c")
    assert found.platform_id == "x" and found.text == "after" and found.tokens == 5
    assert await store.delete_message("c", "x")
    assert await store.messages("c") == []
    await store.add_message(msg("c", "again", "z"))
    await store.set_window_start("c", 99)
    assert await store.window("c") == (99, [])
    assert await store.forget("c") == 1
    assert await store.window("c") == (0, [])
    assert [r.text for r in await store.messages("d")] == ["keep"]


async def test_settings_and_meta(store):
    assert await store.settings("c") == {}
    await store.set_setting("c", "reasoning", "on")
    await store.set_setting("c", "reasoning", "off")
    await store.set_setting("c", "system", "be nice")
    assert await store.settings("c") == {"reasoning": "off", "system": "be nice"}
    await store.set_setting("c", "system", None)
    assert await store.settings("c") == {"reasoning": "off"}
    assert await store.get_meta("k") is None
    await store.set_meta("k", "v")
    assert await store.get_meta("k") == "v"


async def test_window_reads_from_its_start(store):
    ids = [await store.add_message(msg("c", f"m{n}", f"p{n}")) for n in range(4)]
    assert await store.window("new") == (0, [])
    await store.set_window_start("c", ids[2])
    start, rows = await store.window("c")
    assert start == ids[2]
    assert [r.text for r in rows] == ["m2", "m3"]


async def test_add_question_claims_and_stores_once(store):
    row = await store.add_question("answer:c:p1", msg("c", "what now?", "p1"))
    assert row is not None
    assert (row.text, row.platform_id, row.conversation) == ("what now?", "p1", "c")
    assert [r.id for r in await store.messages("c")] == [row.id]
    # A redelivery claims nothing and stores nothing.
    assert await store.add_question("answer:c:p1", msg("c", "what now?", "p1")) is None
    assert len(await store.messages("c")) == 1
    assert not await store.claim_event("answer:c:p1")


async def test_add_question_takes_over_a_message_recorded_as_context(store):
    context_id = await store.add_message(msg("c", "think: why?", "p1"))
    row = await store.add_question("answer:c:p1", msg("c", "why?", "p1"))
    assert row is not None and row.id == context_id
    assert row.text == "why?"
    [stored] = await store.messages("c")
    assert stored.platform_id == "p1" and stored.text == "why?" and stored.tokens == row.tokens


async def test_seed_copies_the_newest_messages_into_an_empty_conversation(store):
    for n in range(5):
        await store.add_message(msg("channel", f"m{n}", f"p{n}", created_at=1000.0 + n))
    assert await store.seed("channel", "thread", 3) == 3
    copied = await store.messages("thread")
    assert [(r.text, r.platform_id, r.created_at) for r in copied] == [
        ("m2", "p2", 1002.0),
        ("m3", "p3", 1003.0),
        ("m4", "p4", 1004.0),
    ]
    assert await store.seed("channel", "thread", 3) == 0  # only an empty conversation
    assert len(await store.messages("thread")) == 3
    assert len(await store.messages("channel")) == 5  # the source is untouched
    assert await store.seed("nowhere", "other", 3) == 0


async def test_answered_means_an_assistant_message_exists(store):
    await store.add_message(msg("c", "question", "p1"))
    assert not await store.answered("c")
    await store.add_message(msg("c", "answer", role="assistant"))
    assert await store.answered("c")
    assert not await store.answered("other")
    await store.forget("c")
    assert not await store.answered("c")


async def test_claim_event_once(store):
    assert await store.claim_event("slack:Ev1")
    assert not await store.claim_event("slack:Ev1")
    assert await store.claim_event("slack:Ev2")


async def test_usage_totals_and_rows(store):
    now = time.time()
    for user, conv, p, c, when in [
        ("U1", "c1", 100, 10, now),
        ("U1", "c2", 200, 20, now),
        ("U2", "c1", 300, 30, now - 40 * 86400),
    ]:
        await store.record_usage(
            UsageRecord("slack", conv, user, "m", p, c, p * 0.15e-6 + c * 0.6e-6, 5.0, "ok", when)
        )
    everyone = await store.usage_totals()
    assert (everyone.calls, everyone.prompt_tokens, everyone.completion_tokens) == (3, 600, 60)
    recent = await store.usage_totals(since=now - 30 * 86400)
    assert recent.calls == 2
    u1 = await store.usage_totals(user_id="U1", conversation="c1")
    assert (u1.calls, u1.prompt_tokens) == (1, 100)
    assert u1.cost_usd == pytest.approx(100 * 0.15e-6 + 10 * 0.6e-6)
    rows = await store.usage_rows(since=now - 86400)
    assert [(r.user_id, r.totals.calls) for r in rows] == [("U1", 2)]


async def test_data_survives_reopen(place):
    first = await open_backend(*place)
    await first.add_message(msg("c", "persisted", "1"))
    await first.set_setting("c", "reasoning", "on")
    assert await first.claim_event("event-1")
    await first.aclose()
    second = await open_backend(*place)  # migrations run again and change nothing
    assert [r.text for r in await second.messages("c")] == ["persisted"]
    assert await second.settings("c") == {"reasoning": "on"}
    assert not await second.claim_event("event-1")  # de-duplication survives restarts
    await second.aclose()
