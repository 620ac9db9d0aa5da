"""`span`, `settings_named` and `usage_totals(kind=)`, on every backend.

SQLite reads a span one of two ways (see `SQLiteStore._span`): each conversation's
time range through the (conversation, created_at) index, or a walk through the
created_at index. Which one depends on how many messages the range holds, so every
span test runs with each forced. PostgreSQL names the conversations to its planner,
or past SPAN_KEYS of them leaves them a subquery: every test runs with both too.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import bot.store.postgres as postgres_backend
import bot.store.sqlite as sqlite_backend
from bot.store import NewMessage, PlaceInfo, Scope, Store, StoredMessage, UsageRecord
from bot.store.search import MAX_SPAN, clamp_span, prefix_end
from tests.test_store import drop_schema, open_backend
from tests.test_store_search import (
    ELSEWHERE,
    GENERAL,
    IN_ELSEWHERE,
    IN_GENERAL,
    IN_SECRET,
    NO_PLACE,
    RANDOM,
    READERS,
    SCOPES,
    SECRET,
    canaries,
    conv,
    noted,
)

HOUR = 3600.0
T0 = 1_700_000_000.0  # a fixed time: spans are compared to the second
_ids = itertools.count(1)


@pytest_asyncio.fixture(params=["sqlite-lookups", "sqlite-walk", "postgres", "postgres-subquery"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Store]:
    """A store of each backend, with each of its ways to read a span."""
    if request.param.startswith("sqlite"):
        # 0: never walk (0 messages are never fewer than 0); 10**9: always walk.
        probe = 0 if request.param == "sqlite-lookups" else 10**9
        monkeypatch.setattr(sqlite_backend, "SPAN_PROBE", probe)
        backend = await open_backend("sqlite", str(tmp_path / "store.db"))
        yield backend
        await backend.aclose()
        return
    if request.param == "postgres-subquery":
        monkeypatch.setattr(postgres_backend, "SPAN_KEYS", 0)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    backend = await open_backend("postgres", schema)
    yield backend
    await backend.aclose()
    with contextlib.suppress(Exception):
        await drop_schema(schema)


async def put(
    store: Store,
    conversation: str,
    text: str,
    at: float,
    *,
    role: str = "user",
    platform_id: str | None = "auto",
    reply_to: int | None = None,
) -> int:
    """Store a message created at T0 + `at` hours; its id."""
    if platform_id == "auto":
        platform_id = f"span-{next(_ids)}"
    author = ("B0", "teambot") if role == "assistant" else ("U1", "Alice")
    row_id = await store.add_message(
        NewMessage(
            conversation,
            role,
            *author,
            text,
            1,
            platform_id,
            reply_to=reply_to,
            created_at=T0 + at * HOUR,
        )
    )
    assert row_id is not None
    return row_id


async def span(
    store: Store,
    prefix: str,
    since: float = -1000.0,
    until: float = 1000.0,
    *,
    scope: Scope = IN_GENERAL,
    limit: int = 10_000,
) -> list[str]:
    """The texts of `store.span` between T0 + `since` and T0 + `until` hours."""
    rows = await store.span(scope, prefix, T0 + since * HOUR, T0 + until * HOUR, limit)
    assert_oldest_first(rows)
    return [row.text for row in rows]


def assert_oldest_first(rows: list[StoredMessage]) -> None:
    order = [(row.created_at, row.id) for row in rows]
    assert order == sorted(order) and len(set(order)) == len(order)


# The window and its order


async def test_span_is_the_window_oldest_first(store):
    await noted(store, GENERAL)
    c = conv(GENERAL)
    # Stored out of time order: the order is by time, not by id.
    for at in [5, 1, 3, 0, 4, 2, 6]:
        await put(store, c, f"h{at}", at)
    assert await span(store, c, 2, 5) == ["h2", "h3", "h4"]  # since in, until out
    assert await span(store, c, 1.5, 4.5) == ["h2", "h3", "h4"]
    assert await span(store, c) == [f"h{n}" for n in range(7)]
    assert await span(store, c, 6, 100) == ["h6"]
    assert await span(store, c, 7, 100) == []
    assert await span(store, c, -100, 0) == []
    assert await span(store, c, 3, 3) == []  # empty range
    assert await span(store, c, 5, 2) == []  # backwards


async def test_same_time_is_ordered_by_id(store):
    await noted(store, GENERAL)
    c = conv(GENERAL)
    first = await put(store, c, "first", 1)
    second = await put(store, c, "second", 1)
    await put(store, c, "earlier", 0.5)
    rows = await store.span(IN_GENERAL, c, T0 + HOUR, T0 + 2 * HOUR)
    assert [row.id for row in rows] == [first, second]
    assert await span(store, c, 0, 2) == ["earlier", "first", "second"]


async def test_span_returns_whole_stored_messages(store):
    await noted(store, GENERAL)
    c = conv(GENERAL)
    question = await put(store, c, "question", 1, platform_id="q1")
    answer = await put(store, c, "answer", 2, role="assistant", platform_id=None, reply_to=question)
    [q, a] = await store.span(IN_GENERAL, c, T0, T0 + 3 * HOUR)
    assert (q.id, q.conversation, q.role, q.author_id, q.platform_id) == (
        question,
        c,
        "user",
        "U1",
        "q1",
    )
    assert q.created_at == T0 + HOUR and not q.copied
    assert (a.id, a.role, a.author_name, a.platform_id, a.reply_to) == (
        answer,
        "assistant",
        "teambot",
        None,
        question,
    )


# Which conversations


async def test_a_channel_prefix_covers_its_threads_and_nothing_else(store):
    await noted(store, GENERAL, RANDOM)
    c11 = PlaceInfo("discord:G1:C11", "c11", "public")  # its key extends "discord:G1:C1"
    await noted(store, c11)
    for thread in ["T1", "T2"]:
        await store.note_place(conv(GENERAL, thread), GENERAL)
    await put(store, conv(GENERAL), "channel 1", 1)
    await put(store, conv(GENERAL, "T1"), "thread one 2", 2)
    await put(store, conv(GENERAL), "channel 3", 3)
    await put(store, conv(GENERAL, "T2"), "thread two 4", 4)
    await put(store, conv(GENERAL, "T1"), "thread one 5", 5)
    await put(store, conv(RANDOM), "random 2", 2)
    await put(store, conv(c11), "c11 3", 3)
    everything = ["channel 1", "thread one 2", "channel 3", "thread two 4", "thread one 5"]
    assert await span(store, conv(GENERAL)) == everything
    assert await span(store, conv(GENERAL), 2, 5) == everything[1:4]
    # One conversation: its whole key.
    assert await span(store, conv(GENERAL, "T1")) == ["thread one 2", "thread one 5"]
    assert await span(store, conv(RANDOM)) == ["random 2"]
    # Wider prefixes take in every readable channel.
    both = ["channel 1", "random 2", "thread one 2", "channel 3", "c11 3", "thread two 4"]
    assert sorted(await span(store, "discord:G1:", 0, 5)) == sorted(both)
    assert await span(store, "discord:G1:C1", 0, 3.5) == [
        "channel 1",
        "thread one 2",
        "channel 3",
        "c11 3",
    ]
    assert len(await span(store, "")) == 7  # every conversation
    assert await span(store, "discord:G1:C9:") == []
    assert await span(store, "slack:") == []
    assert await span(store, conv(GENERAL, "T3")) == []


async def test_seeded_copies_are_left_out_and_answers_kept(store):
    await noted(store, GENERAL)
    await store.note_place(conv(GENERAL, "T1"), GENERAL)
    c = conv(GENERAL)
    question = await put(store, c, "question", 1)
    await put(store, c, "answer", 2, role="assistant", platform_id=None, reply_to=question)
    await put(store, c, "unsent note", 3, platform_id=None)
    assert await store.seed(c, conv(GENERAL, "T1"), 10) == 3
    copies = await store.messages(conv(GENERAL, "T1"))
    assert [m.copied for m in copies] == [True, True, True]  # same times as the originals
    await put(store, conv(GENERAL, "T1"), "in the thread", 4)
    assert await span(store, c) == ["question", "answer", "unsent note", "in the thread"]
    assert await span(store, conv(GENERAL, "T1")) == ["in the thread"]
    rows = await store.span(IN_GENERAL, c, 0, T0 + 100 * HOUR)
    assert not any(row.copied for row in rows)
    assert [row.role for row in rows] == ["user", "assistant", "user", "user"]


async def test_limit_keeps_the_newest_oldest_first(store):
    await noted(store, GENERAL)
    await store.note_place(conv(GENERAL, "T1"), GENERAL)
    for n in range(10):  # alternating between the channel and a thread
        await put(store, conv(GENERAL, "T1" if n % 2 else ""), f"m{n}", n)
    assert await span(store, conv(GENERAL), limit=3) == ["m7", "m8", "m9"]
    assert await span(store, conv(GENERAL), limit=10) == [f"m{n}" for n in range(10)]
    assert await span(store, conv(GENERAL), limit=11) == [f"m{n}" for n in range(10)]
    assert await span(store, conv(GENERAL), 0, 5, limit=2) == ["m3", "m4"]
    assert await span(store, conv(GENERAL, "T1"), limit=2) == ["m7", "m9"]
    assert await span(store, conv(GENERAL), limit=0) == ["m9"]  # at least one
    assert await span(store, conv(GENERAL), limit=-5) == ["m9"]
    assert await span(store, conv(GENERAL), limit=10**9) == [f"m{n}" for n in range(10)]


def test_limit_and_prefix_helpers():
    assert [clamp_span(n) for n in (-1, 0, 1, 500, MAX_SPAN, MAX_SPAN + 1)] == [
        1,
        1,
        1,
        500,
        50_000,
        50_000,
    ]
    assert prefix_end("") is None
    assert prefix_end("slack:T1:C1:") == "slack:T1:C1;"
    assert prefix_end("a%") == "a&"
    assert prefix_end("x\U0010ffff\U0010ffff") == "y"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("a\ud7ff") == "a\ue000"  # past the surrogates
    for prefix in ["slack:T1:C1:", "a%", "é", "x\U0010ffff", "a\ud7ff"]:
        end = prefix_end(prefix)
        assert end is not None and prefix < end
        for key in [prefix, prefix + "\x00", prefix + "zz", prefix + "\U0010ffff" * 3]:
            assert prefix <= key < end  # every key with the prefix is in the range
        assert not end.startswith(prefix)


async def test_the_prefix_is_literal(store):
    odd = PlaceInfo("discord:G1:C%_", "odd", "public")  # wildcards in a real key
    await noted(store, GENERAL, odd)
    await put(store, conv(GENERAL), "general", 1)
    await put(store, conv(odd), "odd", 2)
    for pattern in ["discord:G1:%", "discord:G1:_1:", "%", "_", "discord:G1:C1:*", "discord:G1:C_"]:
        assert await span(store, pattern) == [], pattern
    assert await span(store, "discord:G1:C%_:") == ["odd"]
    assert await span(store, "discord:G1:C%") == ["odd"]
    assert await span(store, "discord:G1:C") == ["general", "odd"]
    assert await span(store, "DISCORD:G1:") == []  # case counts
    assert await span(store, "discord:G1:C1:\x00") == []
    assert await span(store, "discord:G1:C1:\U0010ffff") == []


async def test_keys_beyond_ascii(store):
    cafe = PlaceInfo("discord:G1:Café", "café", "public")
    cafes = PlaceInfo("discord:G1:Caféé", "cafés", "public")
    cafg = PlaceInfo("discord:G1:Cafg", "cafg", "public")
    await noted(store, cafe, cafes, cafg)
    await put(store, conv(cafe), "café", 1)
    await put(store, conv(cafes), "caféé", 2)
    await put(store, conv(cafg), "cafg", 3)
    assert await span(store, conv(cafe)) == ["café"]
    assert await span(store, "discord:G1:Café") == ["café", "caféé"]
    assert await span(store, "discord:G1:Caf") == ["café", "caféé", "cafg"]
    assert await span(store, "discord:G1:Cafe") == []


# Scope


@pytest.mark.parametrize("word", sorted(READERS))
async def test_span_stays_within_scope(store, word):
    planted = await canaries(store)
    conversation, _, row_id = planted[word]
    now = time.time()
    for name, scope in SCOPES.items():
        may = name in READERS[word]
        for prefix in [conversation, conversation.rsplit(":", 1)[0], "discord:", ""]:
            rows = await store.span(scope, prefix, now - 3600, now + 3600)
            ids = [row.id for row in rows]
            if prefix == conversation:
                assert ids == ([row_id] if may else []), (name, prefix)
            else:
                assert (row_id in ids) == may, (name, prefix)


async def test_a_span_follows_its_place(store):
    c = conv(GENERAL)
    await put(store, c, "before its place was noted", 1)
    assert await span(store, c) == []  # no place: nobody
    await noted(store, GENERAL)
    assert await span(store, c) == ["before its place was noted"]
    assert await span(store, c, scope=Scope("discord", RANDOM.key)) == [
        "before its place was noted"
    ]
    # The channel turns private: the rest of the guild loses it, its members keep it.
    await store.note_place(c, PlaceInfo(GENERAL.key, "general", "private"))
    assert await span(store, c, scope=Scope("discord", RANDOM.key)) == []
    assert await span(store, "discord:G1:", scope=Scope("discord", RANDOM.key)) == []
    assert await span(store, c) == ["before its place was noted"]


async def test_a_wide_prefix_reads_only_the_readable_places(store):
    await noted(store, GENERAL, SECRET, ELSEWHERE)
    await put(store, conv(GENERAL), "public", 1)
    await put(store, conv(SECRET), "private", 2)
    await put(store, conv(ELSEWHERE), "other guild", 3)
    await put(store, NO_PLACE, "no place", 4)
    assert await span(store, "discord:") == ["public"]
    assert await span(store, "discord:", scope=IN_SECRET) == ["public", "private"]
    assert await span(store, "discord:", scope=IN_ELSEWHERE) == ["other guild"]
    assert await span(store, "", scope=Scope("slack", "slack:G1:C1", ("G1",))) == []


# Settings by name, usage by kind


async def test_settings_named(store):
    assert await store.settings_named("digest") == []
    await store.set_setting("slack:T1:C2:", "digest", "daily 09:00")
    await store.set_setting("discord:G1:C1:", "digest", "weekly")
    await store.set_setting("Slack:T1:C1:", "digest", "upper")  # byte order: "S" < "d" < "s"
    await store.set_setting("slack:T1:C2:", "reasoning", "on")
    await store.set_setting("slack:T1:C3:", "digest", "gone")
    await store.set_setting("slack:T1:C3:", "digest", None)
    await store.set_setting("discord:G1:C1:", "digest", "monthly")  # replaced
    assert await store.settings_named("digest") == [
        ("Slack:T1:C1:", "upper"),
        ("discord:G1:C1:", "monthly"),
        ("slack:T1:C2:", "daily 09:00"),
    ]
    assert await store.settings_named("reasoning") == [("slack:T1:C2:", "on")]
    assert await store.settings_named("Digest") == []
    assert await store.settings_named("%") == []


async def test_usage_totals_by_kind(store):
    now = time.time()
    for user, conv_key, kind, p, c, when in [
        ("U1", "c1", "reply", 100, 10, now),
        ("U1", "c1", "tool_round", 200, 20, now),
        ("U2", "c2", "tool_round", 300, 30, now),
        ("U1", "c1", "summary", 400, 40, now - 40 * 86400),
    ]:
        await store.record_usage(
            UsageRecord("slack", conv_key, user, "m", p, c, p * 1e-6, 5.0, "ok", when, kind)
        )
    everyone = await store.usage_totals()
    assert (everyone.calls, everyone.prompt_tokens) == (4, 1000)
    rounds = await store.usage_totals(kind="tool_round")
    assert (rounds.calls, rounds.prompt_tokens, rounds.completion_tokens) == (2, 500, 50)
    assert rounds.cost_usd == pytest.approx(500e-6)
    replies = await store.usage_totals(kind="reply")
    assert (replies.calls, replies.prompt_tokens) == (1, 100)
    mine = await store.usage_totals(kind="tool_round", user_id="U1", conversation="c1")
    assert (mine.calls, mine.prompt_tokens) == (1, 200)
    assert (await store.usage_totals(kind="summary")).calls == 1
    assert (await store.usage_totals(kind="summary", since=now - 86400)).calls == 0
    nothing = await store.usage_totals(kind="ocr")
    assert (nothing.calls, nothing.prompt_tokens, nothing.cost_usd) == (0, 0, 0.0)
