"""`teambot migrate --to postgresql://…`: a real SQLite store copied into a real PostgreSQL.

The SQLite side is filled through the Store API, the copy runs as the real command (or
`bot.migrate.migrate` where a test interrupts it), and the PostgreSQL side is read back
through the Store API. Each test gets its own schema, named in the URL's search_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio

from bot import migrate
from bot.store import (
    AuditEntry,
    Budget,
    NewMessage,
    PlaceInfo,
    Scope,
    SearchQuery,
    Store,
    StoredMessage,
    UsageRecord,
)
from bot.store.sqlite import SQLiteStore
from bot.types import DM, PRIVATE, PUBLIC
from tests.test_store import POSTGRES_URL, drop_schema, open_backend

GENERAL = "discord:G1:C1"
THREAD = "discord:G1:C1:T9"
SECRET = "discord:G1:C2"
DIRECT = "discord:@me:D7"
SLACK = "slack:T1:C5"
CONVERSATIONS = (GENERAL, THREAD, SECRET, DIRECT, SLACK)
SPENT = Budget("bot:day", 0.0, None)


@pytest_asyncio.fixture
async def schema() -> AsyncIterator[str]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    store = await open_backend("postgres", name)  # skips the test without a server
    await store.aclose()
    await drop_schema(name)
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with contextlib.suppress(Exception):
        await drop_schema(name)


def target_url(schema: str) -> str:
    """The test database with `schema` first on the search path, as a user would pass it."""
    joiner = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{joiner}options={quote(f'-csearch_path={schema}')}"


async def fill(store: Store, messages_per_conversation: int = 4) -> None:
    """Conversations on both platforms, with replies, settings, usage, audit and limits."""
    places = {
        GENERAL: PlaceInfo(GENERAL, "general", PUBLIC),
        THREAD: PlaceInfo(GENERAL, "general", PUBLIC),
        SECRET: PlaceInfo(SECRET, "secret", PRIVATE),
        DIRECT: PlaceInfo(DIRECT, "", DM),
        SLACK: PlaceInfo(SLACK, "eng", PUBLIC),
    }
    for n in range(messages_per_conversation):
        for key in CONVERSATIONS:
            await store.note_place(key, places[key])
            text = f"{key} says the kestrel build is number {n}"
            asked = await store.add_message(
                NewMessage(key, "user", f"U{n % 2}", f"Person {n % 2}", text, 9, f"{key}-{n}")
            )
            await store.add_message(
                NewMessage(
                    key,
                    "assistant",
                    "bot",
                    "teambot",
                    f"noted: build {n}\x00",  # a NUL, which PostgreSQL's text cannot hold
                    4,
                    reply_to=asked,
                    thinking="hmm",
                    rounds='[{"calls": []}]' if n == 1 else "",
                )
            )
            await store.record_usage(
                UsageRecord("discord", key, f"U{n % 2}", "m", 100 + n, 20, 0.001 * n, 12.5, "ok")
            )
    await store.set_window_start(GENERAL, 3)
    await store.set_setting(GENERAL, "system", "answer in French")
    await store.set_setting(SLACK, "reasoning", "high")
    await store.set_spend_limit("bot:day", 20.0)
    await store.set_spend_limit("user:discord:U1:day", 1.5)
    await store.add_audit(AuditEntry("discord", "U0", "limits", "bot:day 20.00"))
    await store.add_audit(AuditEntry("", "shell", "export", "user U1"))
    await store.claim_event("slack:Ev123")
    await store.set_meta("calibration", "1.0500")


def readable(messages: list[StoredMessage]) -> list[StoredMessage]:
    """PostgreSQL cannot keep NUL characters: the copy drops them (asserted apart)."""
    return [replace(m, text=m.text.replace("\x00", "")) for m in messages]


async def snapshot(store: Store) -> dict[str, object]:
    """What a person sees of a store through the Store API."""
    search = SearchQuery("kestrel build", limit=50)
    hits = await store.search(Scope("discord", GENERAL, ("G1",)), search)
    windows = {key: await store.window(key) for key in CONVERSATIONS}
    return {
        "messages": {key: readable(await store.messages(key)) for key in CONVERSATIONS},
        "windows": {key: (start, readable(rows)) for key, (start, rows) in windows.items()},
        "settings": {key: await store.settings(key) for key in CONVERSATIONS},
        "usage": await store.usage_totals(),
        "usage_rows": await store.usage_rows(),
        "per_user": await store.usage_totals(user_id="U1"),
        "spent": await store.spent([SPENT, Budget("user:discord:U1:day", 0.0, None)]),
        "audit": await store.audit_entries(),
        "places": await store.places(Scope("discord", SECRET, ("G1",))),
        "hits": sorted((hit.message.id, hit.message.text) for hit in hits),
        "nul": sum(["\x00" in m.text for key in CONVERSATIONS for m in await store.messages(key)]),
        "meta": await store.get_meta("calibration"),
    }


@pytest_asyncio.fixture
async def source(tmp_path: Path) -> Path:
    path = tmp_path / "teambot.db"
    store = await SQLiteStore.open(str(path))
    await fill(store)
    await store.aclose()
    return path


def rows_in(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def teambot_migrate(db: Path | str, to: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEAMBOT_", "DATABASE_"))}
    env["DATABASE_URL"] = db if isinstance(db, str) else f"sqlite:///{db}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "migrate",
        "--to",
        to,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def counts(out: str) -> dict[str, tuple[int, int]]:
    """{table: (copied, already there)} from the command's lines, the total left out."""
    found = re.findall(r"^(\w+): (\d+) copied, (\d+) already there", out, re.MULTILINE)
    return {t: (int(copied), int(there)) for t, copied, there in found if t != "total"}


async def open_target(schema: str) -> Store:
    return await open_backend("postgres", schema)


async def test_migrate_copies_everything_and_a_second_run_copies_nothing(
    source: Path, schema: str, tmp_path: Path
) -> None:
    before = await SQLiteStore.open(str(source))
    expected = await snapshot(before)
    await before.aclose()
    url = target_url(schema)

    code, out, err = await teambot_migrate(source, url, tmp_path)
    assert code == 0, err
    first = counts(out)
    for table in ("messages", "usage", "audit", "conversations", "places", "spend_limits"):
        assert first[table] == (rows_in(source, table), 0), (table, out)
    assert first["conversation_settings"] == (2, 0)
    assert first["processed_events"] == (rows_in(source, "processed_events"), 0)
    total = sum(copied for copied, _ in first.values())
    assert f"total: {total} copied, 0 already there" in out
    assert "spend_holds" not in first and "authors" not in first  # in flight / derived

    target = await open_target(schema)
    try:
        got = await snapshot(target)
        assert got == expected | {"nul": 0}
        assert expected["hits"], "the search finds the migrated messages"
        assert expected["nul"] == rows_in(source, "messages") // 2
        assert await target.claim_event("slack:Ev123") is False
    finally:
        await target.aclose()

    code, out, err = await teambot_migrate(source, url, tmp_path)
    assert code == 0, err
    again = counts(out)
    assert again.keys() == first.keys()
    for table, (copied, there) in again.items():
        assert copied == 0 and there == first[table][0] + first[table][1], (table, out)
    assert f"total: 0 copied, {total} already there" in out

    target = await open_target(schema)
    try:
        assert await snapshot(target) == expected | {"nul": 0}
        highest = max(m.id for ms in expected["messages"].values() for m in ms)  # type: ignore[attr-defined]
        fresh = await target.add_message(NewMessage(GENERAL, "user", "U3", "C", "new", 1, "x"))
        assert fresh is not None and fresh > highest
        await target.record_usage(UsageRecord("slack", SLACK, "U3", "m", 1, 1, 0.25, 1.0, "ok"))
        await target.add_audit(AuditEntry("slack", "U3", "tools", "on"))
        assert (await target.usage_totals()).calls == rows_in(source, "usage") + 1
        assert len(await target.audit_entries()) == rows_in(source, "audit") + 1
    finally:
        await target.aclose()


async def test_an_interrupted_copy_resumes_where_it_stopped(source: Path, schema: str) -> None:
    url = target_url(schema)
    await migrate.prepare(f"sqlite:///{source}", url)
    total = rows_in(source, "messages")
    batches: list[tuple[str, int]] = []

    def stop_after_two_message_batches(table: str, rows: int) -> None:
        batches.append((table, rows))
        if [t for t, _ in batches].count("messages") == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await migrate.migrate(str(source), url, batch=3, after_batch=stop_after_two_message_batches)
    assert batches[-2:] == [("messages", 3), ("messages", 3)]

    target = await open_target(schema)
    try:
        copied = [len(await target.messages(key)) for key in CONVERSATIONS]
        assert sum(copied) == 6
    finally:
        await target.aclose()

    lines: list[str] = []
    result = await migrate.migrate(
        str(source), url, batch=3, report=lambda c: lines.append(c.line())
    )
    by_table = {count.table: count for count in result}
    assert (by_table["messages"].copied, by_table["messages"].present) == (total - 6, 6)
    assert f"messages: {total - 6} copied, 6 already there" in lines
    assert by_table["usage"].copied == rows_in(source, "usage")

    before = await SQLiteStore.open(str(source))
    target = await open_target(schema)
    try:
        assert await snapshot(target) == await snapshot(before) | {"nul": 0}
    finally:
        await target.aclose()
        await before.aclose()


async def test_a_later_sqlite_state_wins_on_the_next_run(
    source: Path, schema: str, tmp_path: Path
) -> None:
    url = target_url(schema)
    code, _, err = await teambot_migrate(source, url, tmp_path)
    assert code == 0, err

    store = await SQLiteStore.open(str(source))
    await store.set_setting(GENERAL, "system", "answer in German")
    await store.note_place(SECRET, PlaceInfo(SECRET, "renamed", PRIVATE))
    await store.add_message(NewMessage(SECRET, "user", "U1", "P", "one more kestrel", 3, "late"))
    await store.set_window_start(THREAD, 9)
    expected = await snapshot(store)
    await store.aclose()

    code, out, err = await teambot_migrate(source, url, tmp_path)
    assert code == 0, err
    assert counts(out)["messages"] == (1, rows_in(source, "messages") - 1)
    assert re.search(r"^conversation_settings: 0 copied, 1 already there, 1 updated$", out, re.M)
    assert re.search(r"^places: 0 copied, \d+ already there, 1 updated$", out, re.M)

    target = await open_target(schema)
    try:
        assert await snapshot(target) == expected | {"nul": 0}
        assert (await target.settings(GENERAL))["system"] == "answer in German"
    finally:
        await target.aclose()


async def test_refuses_a_database_that_already_has_its_own_rows(
    source: Path, schema: str, tmp_path: Path
) -> None:
    target = await open_target(schema)
    await target.add_message(NewMessage(GENERAL, "user", "U9", "Z", "written on PostgreSQL", 3))
    await target.aclose()

    code, _, err = await teambot_migrate(source, target_url(schema), tmp_path)
    assert code == 1
    assert err.strip().splitlines() == [
        "teambot: migrate: PostgreSQL's messages table already holds rows that teambot "
        "migrate did not copy; migrate into a new, empty database"
    ]
    target = await open_target(schema)
    try:
        assert [m.text for m in await target.messages(GENERAL)] == ["written on PostgreSQL"]
    finally:
        await target.aclose()


async def test_refuses_to_go_on_when_both_databases_gained_rows(source: Path, schema: str) -> None:
    url = target_url(schema)
    await migrate.prepare(f"sqlite:///{source}", url)
    await migrate.migrate(str(source), url)
    for store in (await SQLiteStore.open(str(source)), await open_target(schema)):
        await store.add_audit(AuditEntry("slack", "U5", "tools", "off"))
        await store.aclose()

    with pytest.raises(migrate.MigrateError, match=r"^audit: both databases have new rows"):
        await migrate.migrate(str(source), url)
    target = await open_target(schema)
    try:
        assert len(await target.audit_entries()) == rows_in(source, "audit")
    finally:
        await target.aclose()


async def test_tables_and_columns_are_read_from_both_schemas(tmp_path: Path, schema: str) -> None:
    """A table the copier does not know comes along by its key, with the columns both
    sides have, each value made to fit its PostgreSQL type."""
    path = tmp_path / "teambot.db"
    store = await SQLiteStore.open(str(path))
    await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, flag INTEGER, size REAL, "
            "blob TEXT, body BLOB, only_here TEXT)"
        )
        conn.executemany(
            "INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?)",
            [(n, n % 2, float(n * 10), f"raw {n}", f"body {n}".encode(), "x") for n in (1, 2, 5)],
        )
        conn.execute("CREATE TABLE only_sqlite (id INTEGER PRIMARY KEY)")
        conn.commit()
    url = target_url(schema)
    await migrate.prepare(f"sqlite:///{path}", url)
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, flag BOOLEAN, size BIGINT, "
            "blob BYTEA, body TEXT, only_there TEXT NOT NULL DEFAULT 'kept')"
        )

    code, out, err = await teambot_migrate(path, url, tmp_path)
    assert code == 0, err
    assert counts(out)["notes"] == (3, 0)
    assert "only_sqlite" not in out

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await (await conn.execute("SELECT * FROM notes ORDER BY id")).fetchall()
        assert rows == [
            (1, True, 10, b"raw 1", "body 1", "kept"),
            (2, False, 20, b"raw 2", "body 2", "kept"),
            (5, True, 50, b"raw 5", "body 5", "kept"),
        ]
        inserted = await conn.execute("INSERT INTO notes (flag) VALUES (true) RETURNING id")
        assert (await inserted.fetchone()) == (6,)  # the sequence moved past the copied ids


@pytest.mark.parametrize(
    ("database_url", "to", "message"),
    [
        (
            "postgresql://postgres@127.0.0.1/x",
            "postgresql://postgres@127.0.0.1/y",
            "teambot: configuration error: DATABASE_URL: migrate copies from a sqlite:/// "
            "database (this one is postgresql)",
        ),
        (
            "sqlite:///{tmp}/missing.db",
            "postgresql://postgres@127.0.0.1/y",
            "teambot: configuration error: DATABASE_URL: no SQLite database at {tmp}/missing.db",
        ),
        (
            "sqlite:///{tmp}/teambot.db",
            "mysql://root:hunter2@db/teambot",
            "teambot: configuration error: --to: a postgresql:// URL (got 'mysql')",
        ),
    ],
)
async def test_bad_urls_get_one_line_and_exit_2(
    source: Path, tmp_path: Path, database_url: str, to: str, message: str
) -> None:
    code, out, err = await teambot_migrate(database_url.format(tmp=tmp_path), to, tmp_path)
    assert code == 2
    assert err.strip().splitlines() == [message.format(tmp=tmp_path)]
    assert "hunter2" not in out + err


async def test_an_unreachable_target_names_the_option(source: Path, tmp_path: Path) -> None:
    code, _, err = await teambot_migrate(
        source, "postgresql://postgres:hunter2@127.0.0.1:1/none", tmp_path
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("teambot: configuration error: --to: ")
    assert "hunter2" not in err
