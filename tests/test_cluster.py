"""Turns and change news across processes (bot/cluster.py, bot/store/pg_cluster.py).

Two stores opened on one PostgreSQL schema stand for two bot processes: each has its
own owner lock and change feed, exactly as two `teambot run` would. The end-to-end
runs with real processes are in tests/test_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.cluster import LocalCluster
from bot.engine import Engine
from bot.mistral import MistralClient
from bot.store import NewMessage, Store
from bot.types import ConversationKey
from tests.conftest import test_settings as settings_for
from tests.test_store import POSTGRES_URL, drop_schema, open_backend


@pytest_asyncio.fixture
async def schema() -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(Exception):
        await drop_schema(name)


@pytest_asyncio.fixture
async def two(schema: str) -> AsyncIterator[tuple[Store, Store]]:
    first = await open_backend("postgres", schema)
    second = await open_backend("postgres", schema)
    yield first, second
    await first.aclose()
    await second.aclose()


async def _run_turn(
    store: Store, conv: str, question: int, name: str, log: list[str], hold: float
) -> bool:
    async with store.cluster.turn(conv, question) as waited:
        log.append(f"start {name}")
        await asyncio.sleep(hold)
        log.append(f"end {name}")
    return waited


async def ask(store: Store, conv: str) -> int:
    """Store a question the way the engine does (which enters its turn); its row id."""
    tag = uuid.uuid4().hex
    row = await store.add_question(
        f"answer:{tag}", NewMessage(conv, "user", "U1", "Alice", "a question", 2, tag)
    )
    assert row is not None
    return row.id


async def test_turns_across_processes_follow_the_order_questions_were_stored(two):
    a, b = two
    stores = [a, b, a, b, b, a]
    questions = [await ask(store, "conv") for store in stores]
    log: list[str] = []
    # The processes come asking for their turns in the opposite order.
    tasks = [
        asyncio.create_task(_run_turn(stores[n], "conv", questions[n], f"r{n}", log, 0.02))
        for n in reversed(range(6))
    ]
    waited = list(reversed(await asyncio.gather(*tasks)))
    assert log == [f"{edge} r{n}" for n in range(6) for edge in ("start", "end")]
    assert waited[0] is False and all(waited[1:])


async def test_questions_stored_at_once_by_two_processes_take_distinct_turns(two):
    a, b = two
    questions = await asyncio.gather(*(ask(store, "conv") for store in [a, b] * 10))
    log: list[str] = []
    stores = [a, b] * 10
    await asyncio.gather(
        *(_run_turn(stores[n], "conv", q, str(q), log, 0.001) for n, q in enumerate(questions))
    )
    # One at a time, in the order of the stored rows.
    assert log == [f"{edge} {q}" for q in sorted(questions) for edge in ("start", "end")]


async def test_different_conversations_do_not_wait_for_each_other(two):
    a, b = two
    release = asyncio.Event()
    held = asyncio.Event()
    first, second = await ask(a, "one"), await ask(b, "two")

    async def hold() -> None:
        async with a.cluster.turn("one", first):
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    async with b.cluster.turn("two", second) as waited:
        assert waited is False
    release.set()
    await holder


async def test_a_dead_process_releases_its_turns(two):
    a, b = two
    entered = asyncio.Event()
    first, second = await ask(a, "conv"), await ask(b, "conv")

    async def stuck() -> None:
        async with a.cluster.turn("conv", first):
            entered.set()
            await asyncio.sleep(3600)

    holder = asyncio.create_task(stuck())
    await entered.wait()
    waiter = asyncio.create_task(_run_turn(b, "conv", second, "b", [], 0))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    # "Process" a loses its database connection, and with it its owner lock, as a
    # SIGKILL would make it (tests/test_processes.py kills a real one).
    await a.cluster.aclose()
    assert await asyncio.wait_for(waiter, 10) is True
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder


async def test_local_cluster_is_first_in_first_out():
    cluster = LocalCluster()
    log: list[str] = []
    tasks = [asyncio.create_task(_run_turn_local(cluster, n, log)) for n in range(5)]
    waited = await asyncio.gather(*tasks)
    assert log == [f"{edge} {n}" for n in range(5) for edge in ("start", "end")]
    assert waited == [False, True, True, True, True]


async def _run_turn_local(cluster: LocalCluster, n: int, log: list[str]) -> bool:
    async with cluster.turn("c", n) as waited:
        log.append(f"start {n}")
        await asyncio.sleep(0.005)
        log.append(f"end {n}")
    return waited


async def _engine(store: Store, fake_mistral: Any, tmp_path: Path) -> Engine:
    settings = settings_for(fake_mistral, tmp_path / "unused.db")
    model = MistralClient(
        api_key=settings.mistral_api_key, base_url=settings.mistral_base_url, model=settings.model
    )
    engine = Engine(settings, store, model)
    await engine.start()
    return engine


async def _eventually(check: Any) -> None:
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the other process never saw the change")


async def test_a_setting_changed_in_one_process_applies_in_the_other(
    schema, fake_mistral, tmp_path
):
    first = await open_backend("postgres", schema)
    second = await open_backend("postgres", schema)
    a = await _engine(first, fake_mistral, tmp_path)
    b = await _engine(second, fake_mistral, tmp_path)
    try:
        key = ConversationKey("slack", "T1", "C1")
        assert (await b.conversation_settings(key)).system is None  # now cached in b
        await a.set_setting(key, "system", "Answer in French.")

        async def seen() -> bool:
            return (await b.conversation_settings(key)).system == "Answer in French."

        await _eventually(seen)
        await a.set_setting(key, "system", None)

        async def reset() -> bool:
            return (await b.conversation_settings(key)).system is None

        await _eventually(reset)
    finally:
        await a.aclose()
        await b.aclose()


async def test_an_edit_in_one_process_reaches_the_other_s_cached_window(
    schema, fake_mistral, tmp_path
):
    from tests.helpers import collect, message, prompt_text

    first = await open_backend("postgres", schema)
    second = await open_backend("postgres", schema)
    a = await _engine(first, fake_mistral, tmp_path)
    b = await _engine(second, fake_mistral, tmp_path)
    try:
        first_question = message("the password is swordfish")
        await collect(b, first_question)
        key = first_question.key
        assert await a.edit(key, first_question.id, "the password is [redacted]")

        async def dropped() -> bool:
            return key not in b.pipeline.windows._cached

        await _eventually(dropped)
        await collect(b, message("what is the password?"))
        prompt = prompt_text(fake_mistral.requests[-1])
        # The fake's earlier answer echoed the old text; the question itself must not.
        lines = prompt.splitlines()
        assert "the password is [redacted]" in lines
        assert "the password is swordfish" not in lines
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("topic", ["texts", "*"])
async def test_news_that_touch_everything_drop_every_cache(topic, schema, fake_mistral, tmp_path):
    store = await open_backend("postgres", schema)
    engine = await _engine(store, fake_mistral, tmp_path)
    try:
        key = ConversationKey("slack", "T1", "C9")
        await engine.conversation_settings(key)
        assert key in engine._settings
        engine._changed_elsewhere(topic, "")
        assert key not in engine._settings
    finally:
        await engine.aclose()


async def test_processes_starting_together_migrate_once(schema):
    # Both open (and migrate) the same fresh schema at once: the migration lock makes
    # one wait for the other, and both see every migration applied exactly once. (The
    # schema exists first, as a database does in production; only tests make schemas.)
    psycopg = pytest.importorskip("psycopg")
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    first, second = await asyncio.gather(
        open_backend("postgres", schema), open_backend("postgres", schema)
    )
    try:
        pool: Any = first.pool  # type: ignore[attr-defined]
        async with pool.connection() as conn:
            names = [
                row["name"]
                for row in await (
                    await conn.execute("SELECT name FROM teambot_migrations ORDER BY name")
                ).fetchall()
            ]
        assert names == sorted(set(names)) and "m007_turns" in names
        assert await first.add_message(NewMessage("c", "user", "U1", "A", "hi", 1, "p1"))
        assert [m.text for m in await second.messages("c")] == ["hi"]
    finally:
        await first.aclose()
        await second.aclose()
