"""Places, search, locate and around: the store's reads within a scope, on every backend.

The scope tests plant a canary word in each place an asker must not read, and check it
is found from a scope that may read it (so a search that finds nothing fails too).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from bot.store import NewMessage, PlaceInfo, Scope, SearchQuery, Store, UsageRecord
from tests.test_store import POSTGRES_URL, open_backend, place, store

__all__ = ["place", "store"]  # the backend fixtures, one run per backend

DAY = 86400.0
_ids = itertools.count(1)

GENERAL = PlaceInfo("discord:G1:C1", "general", "public")
RANDOM = PlaceInfo("discord:G1:C4", "random", "public")
SECRET = PlaceInfo("discord:G1:C2", "secret", "private")
MY_DM = PlaceInfo("discord::D1", "Alice", "dm")
OTHER_DM = PlaceInfo("discord::D2", "Bob", "dm")
ELSEWHERE = PlaceInfo("discord:G2:C9", "their-general", "public")

IN_GENERAL = Scope("discord", GENERAL.key)
IN_SECRET = Scope("discord", SECRET.key)
IN_MY_DM = Scope("discord", MY_DM.key, ("G1",))
IN_OTHER_DM = Scope("discord", OTHER_DM.key)
IN_ELSEWHERE = Scope("discord", ELSEWHERE.key)
ON_SLACK = Scope("slack", "slack:G1:C1", ("G1",))
NO_PLACE = "discord:G1:C3:"  # a conversation nobody ever noted a place for


def conv(place: PlaceInfo, thread: str = "") -> str:
    return f"{place.key}:{thread}"


async def say(
    store: Store,
    conversation: str,
    text: str,
    *,
    ago_days: float = 0.0,
    author: tuple[str, str] = ("U1", "Alice"),
    role: str = "user",
    platform_id: str | None = "auto",
    reply_to: int | None = None,
) -> int:
    """Store a message; its id."""
    if platform_id == "auto":
        platform_id = f"auto-{next(_ids)}"
    row_id = await store.add_message(
        NewMessage(
            conversation,
            role,
            author[0],
            author[1],
            text,
            len(text.split()),
            platform_id,
            reply_to=reply_to,
            created_at=time.time() - ago_days * DAY,
        )
    )
    assert row_id is not None
    return row_id


async def noted(store: Store, *places: PlaceInfo) -> None:
    for p in places:
        await store.note_place(conv(p), p)


def texts(hits: list[Any]) -> list[str]:
    return [hit.message.text for hit in hits]


# Search: finding and ranking


async def test_search_finds_people_messages_with_place_snippet_and_score(store):
    await noted(store, GENERAL)
    await say(store, conv(GENERAL), "the release notes are ready", ago_days=3)
    await say(store, conv(GENERAL), "lunch at noon?")
    [hit] = await store.search(IN_GENERAL, SearchQuery("releases"))  # stemmed
    assert hit.message.text == "the release notes are ready"
    assert hit.message.conversation == conv(GENERAL) and hit.message.role == "user"
    assert hit.place == GENERAL
    assert "**release**" in hit.snippet and len(hit.snippet) <= 220
    assert hit.score > 0


async def test_ranking_blends_relevance_and_recency(store):
    await noted(store, GENERAL)
    await say(store, conv(GENERAL), "deploy", ago_days=200)
    await say(store, conv(GENERAL), "deploy", ago_days=1)
    await say(store, conv(GENERAL), "the deploy went fine, long message about other things")
    await say(store, conv(GENERAL), "deploy deploy deploy", ago_days=1)
    hits = await store.search(IN_GENERAL, SearchQuery("deploy"))
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    order = texts(hits)
    # Same age: the more relevant first. Same text: the newer first.
    assert order.index("deploy deploy deploy") < order.index("deploy")
    ages = [hit.message.created_at for hit in hits if hit.message.text == "deploy"]
    assert ages == sorted(ages, reverse=True)
    assert order[-1] == "deploy"  # the 200-day-old one, least of all


async def test_every_term_first_then_any_term(store):
    await noted(store, GENERAL)
    await say(store, conv(GENERAL), "deploy on friday")
    await say(store, conv(GENERAL), "release checklist", ago_days=2)
    both = await say(store, conv(GENERAL), "release and deploy tonight", ago_days=5)
    hits = await store.search(IN_GENERAL, SearchQuery("deploy release"))
    assert hits[0].message.id == both  # older, but it has both words
    assert set(texts(hits[1:])) == {"deploy on friday", "release checklist"}
    assert all(hits[0].score > hit.score for hit in hits[1:])
    # Enough hits with every term: no fill-up.
    assert [
        h.message.id for h in await store.search(IN_GENERAL, SearchQuery("deploy release", limit=1))
    ] == [both]


async def test_a_question_finds_what_it_is_about(store):
    await noted(store, GENERAL)
    await say(store, conv(GENERAL), "we moved the release to monday")
    await say(store, conv(GENERAL), "nothing to see here")
    hits = await store.search(IN_GENERAL, SearchQuery("what did we decide about the release?"))
    assert texts(hits) == ["we moved the release to monday"]


async def test_filters_place_author_time_and_limit(store):
    await noted(store, GENERAL, RANDOM)
    await say(store, conv(GENERAL), "budget draft", author=("U1", "Élodie Durand"), ago_days=40)
    await say(store, conv(GENERAL), "budget final", author=("U2", "Bob"), ago_days=2)
    await say(store, conv(RANDOM), "budget gossip", author=("U3", "Carol"), ago_days=10)
    await store.note_place(conv(GENERAL, "T1"), GENERAL)  # a thread of #general
    await say(store, conv(GENERAL, "T1"), "budget in a thread", author=("U2", "Bob"))

    async def found(**filters: Any) -> set[str]:
        return set(texts(await store.search(IN_GENERAL, SearchQuery("budget", **filters))))

    assert await found() == {"budget draft", "budget final", "budget gossip", "budget in a thread"}
    assert await found(place=RANDOM.key) == {"budget gossip"}
    assert await found(place=GENERAL.key) == {"budget draft", "budget final", "budget in a thread"}
    assert await found(place=SECRET.key) == set()  # not readable from here
    assert await found(author="U2") == {"budget final", "budget in a thread"}
    assert await found(author="élodie") == {"budget draft"}  # part of a name, any case
    assert await found(author="DURAND") == {"budget draft"}
    assert await found(author="U9") == set()
    now = time.time()
    assert await found(after=now - 5 * DAY) == {"budget final", "budget in a thread"}
    assert await found(before=now - 5 * DAY) == {"budget draft", "budget gossip"}
    assert await found(after=now - 20 * DAY, before=now - 5 * DAY) == {"budget gossip"}
    assert await found(after=now + DAY) == set()


async def test_limit_is_clamped(store):
    await noted(store, GENERAL)
    for n in range(55):
        await say(store, conv(GENERAL), f"standup note {n}")
    assert len(await store.search(IN_GENERAL, SearchQuery("standup", limit=3))) == 3
    assert len(await store.search(IN_GENERAL, SearchQuery("standup", limit=0))) == 1
    assert len(await store.search(IN_GENERAL, SearchQuery("standup", limit=-5))) == 1
    assert len(await store.search(IN_GENERAL, SearchQuery("standup", limit=1000))) == 50


HOSTILE = [
    '"',
    "*",
    "NEAR(",
    "NEAR(release deploy, 2)",
    "'); DROP TABLE messages; --",
    "AND OR NOT",
    "release AND OR NOT",
    ":",
    "text:release",
    "(((",
    ")))release(((",
    "^release",
    "-release",
    "release*",
    '"release',
    "x" * 10_000,
    "release " * 1_250,  # 10,000 characters of words
    " ".join(f"w{n}" for n in range(2_000)),
    "",
    "   ",
    "🎉🚀",
    "release 🎉",
    "\x00release\x00",
    "%_\\",
    "release & deploy | !ship <-> 'x':*",
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
async def test_any_text_is_a_valid_query(store, query):
    await noted(store, GENERAL)
    await say(store, conv(GENERAL), "release deploy ship")
    hits = await store.search(IN_GENERAL, SearchQuery(query))
    assert isinstance(hits, list)
    if "release" in query.lower():  # the word is there as a plain term
        assert texts(hits) == ["release deploy ship"]
    hostile = await store.search(IN_GENERAL, SearchQuery("release", author=query, place=query))
    assert hostile == []
    # The table is still there and still indexed.
    await say(store, conv(GENERAL), "release again")
    assert len(await store.search(IN_GENERAL, SearchQuery("release"))) == 2


async def test_queries_without_terms_find_nothing(store):
    await noted(store, GENERAL)
    await say(store, conv(GENERAL), "the and or not")
    for query in ["", "   ", "the", "AND OR NOT", "🎉", "?!"]:
        assert await store.search(IN_GENERAL, SearchQuery(query)) == []


# Search: what is never a hit, and what changes


async def test_edits_and_deletes_are_reflected(store):
    await noted(store, GENERAL)
    await say(store, conv(GENERAL), "first draft of the plan", platform_id="m1")
    await say(store, conv(GENERAL), "plan b", platform_id="m2")
    assert await store.update_message(conv(GENERAL), "m1", "final version of the roadmap", 5)
    assert texts(await store.search(IN_GENERAL, SearchQuery("draft"))) == []
    assert texts(await store.search(IN_GENERAL, SearchQuery("roadmap"))) == [
        "final version of the roadmap"
    ]
    assert await store.delete_message(conv(GENERAL), "m1")
    assert await store.search(IN_GENERAL, SearchQuery("roadmap")) == []
    assert texts(await store.search(IN_GENERAL, SearchQuery("plan"))) == ["plan b"]
    assert await store.forget(conv(GENERAL)) == 1
    assert await store.search(IN_GENERAL, SearchQuery("plan")) == []
    await say(store, conv(GENERAL), "a new plan")  # the index still takes new messages
    assert texts(await store.search(IN_GENERAL, SearchQuery("plan"))) == ["a new plan"]


async def test_copies_answers_and_unsent_messages_are_not_hits(store):
    await noted(store, GENERAL)
    question = await say(store, conv(GENERAL), "is the kangaroo deployed?")
    await say(store, conv(GENERAL), "kangaroo answer", role="assistant", reply_to=question)
    await say(store, conv(GENERAL), "kangaroo without a platform id", platform_id=None)
    await store.note_place(conv(GENERAL, "T1"), GENERAL)
    assert await store.seed(conv(GENERAL), conv(GENERAL, "T1"), 10) == 3
    copies = await store.messages(conv(GENERAL, "T1"))
    assert [m.copied for m in copies] == [True, True, True]
    hits = await store.search(IN_GENERAL, SearchQuery("kangaroo"))
    assert [(h.message.id, h.message.copied) for h in hits] == [(question, False)]


async def test_messages_before_their_place_was_noted_follow_it(store):
    await say(store, conv(GENERAL), "early bird")  # stored before any note_place
    assert await store.search(IN_GENERAL, SearchQuery("bird")) == []  # no place: nobody
    await noted(store, GENERAL)
    assert texts(await store.search(IN_GENERAL, SearchQuery("bird"))) == ["early bird"]
    # The channel turns private: the rest of the guild loses it, its members keep it.
    await store.note_place(conv(GENERAL), PlaceInfo(GENERAL.key, "general", "private"))
    assert await store.search(Scope("discord", RANDOM.key), SearchQuery("bird")) == []
    assert texts(await store.search(IN_GENERAL, SearchQuery("bird"))) == ["early bird"]


# Scope canaries


async def canaries(store: Store) -> dict[str, tuple[str, str, int]]:
    """One canary word per conversation: word -> (conversation, platform id, message id)."""
    await noted(store, GENERAL, SECRET, MY_DM, OTHER_DM, ELSEWHERE)
    planted = {
        "walrus": conv(GENERAL),
        "pineapple": conv(SECRET),
        "tangerine": conv(MY_DM),
        "zucchini": conv(OTHER_DM),
        "quokka": conv(ELSEWHERE),
        "narwhal": NO_PLACE,
    }
    out = {}
    for word, conversation in planted.items():
        platform_id = f"canary-{word}"
        row_id = await say(store, conversation, f"the {word} sings", platform_id=platform_id)
        out[word] = (conversation, platform_id, row_id)
    return out


# word -> the scopes that may read it (every other scope below must not)
READERS = {
    "walrus": {"general", "secret", "my_dm", "no_place_channel"},  # public in G1
    "pineapple": {"secret"},  # private channel: its own members only
    "tangerine": {"my_dm", "dm_in_g2"},  # the same DM, asked with another guild
    "zucchini": {"other_dm"},
    "quokka": {"elsewhere", "dm_in_g2"},  # public, but in G2
    "narwhal": set(),  # no place: nobody
}
SCOPES = {
    "general": IN_GENERAL,
    "secret": IN_SECRET,
    "my_dm": IN_MY_DM,
    "other_dm": IN_OTHER_DM,
    "elsewhere": IN_ELSEWHERE,
    "dm_in_g2": Scope("discord", MY_DM.key, ("G2",)),
    "slack": ON_SLACK,
    "no_place_channel": Scope("discord", "discord:G1:C3", ("G1",)),
}


@pytest.mark.parametrize("word", sorted(READERS))
async def test_search_locate_and_around_stay_within_scope(store, word):
    planted = await canaries(store)
    conversation, platform_id, row_id = planted[word]
    for name, scope in SCOPES.items():
        may = name in READERS[word]
        hits = await store.search(scope, SearchQuery(word))
        assert [h.message.id for h in hits] == ([row_id] if may else []), (name, "search")
        # Nor through the filters, nor by asking for every word at once.
        everything = " ".join(READERS)
        found = {h.message.id for h in await store.search(scope, SearchQuery(everything, limit=50))}
        assert (row_id in found) == may, (name, "search all")
        by_place = await store.search(
            scope, SearchQuery(word, place=conversation.rsplit(":", 1)[0])
        )
        assert bool(by_place) == may, (name, "search place")
        located = await store.locate(scope, "discord:", platform_id)
        assert (located is not None and located.id == row_id) == may, (name, "locate")
        around = await store.around(scope, conversation)
        assert [m.id for m in around] == ([row_id] if may else []), (name, "around")
        around_id = await store.around(scope, conversation, message_id=row_id)
        assert [m.id for m in around_id] == ([row_id] if may else []), (name, "around id")


async def test_places_lists_what_a_scope_reads(store):
    await canaries(store)
    await noted(store, RANDOM)

    async def keys(scope: Scope) -> list[str]:
        return [p.key for p in await store.places(scope)]

    assert await keys(IN_GENERAL) == [GENERAL.key, RANDOM.key]  # by name
    assert await keys(IN_SECRET) == [GENERAL.key, RANDOM.key, SECRET.key]
    assert await keys(IN_MY_DM) == [MY_DM.key, GENERAL.key, RANDOM.key]  # "Alice" first
    assert await keys(IN_OTHER_DM) == [OTHER_DM.key]
    assert await keys(IN_ELSEWHERE) == [ELSEWHERE.key]
    assert await keys(ON_SLACK) == []
    assert await keys(SCOPES["no_place_channel"]) == [GENERAL.key, RANDOM.key]
    [secret] = [p for p in await store.places(IN_SECRET) if p.key == SECRET.key]
    assert secret == SECRET
    await store.note_place(conv(SECRET), PlaceInfo(SECRET.key, "secret-renamed", "private"))
    assert [p.name for p in await store.places(IN_SECRET)][-1] == "secret-renamed"


# locate and around


async def test_locate_prefers_the_original_over_seeded_copies(store):
    await noted(store, GENERAL)
    await store.note_place(conv(GENERAL, "T1"), GENERAL)
    original = await say(store, conv(GENERAL), "the original", platform_id="ts1")
    await store.seed(conv(GENERAL), conv(GENERAL, "T1"), 5)
    found = await store.locate(IN_GENERAL, "discord:G1:", "ts1")
    assert found is not None and found.id == original and not found.copied
    in_thread = await store.locate(IN_GENERAL, conv(GENERAL, "T1"), "ts1")
    assert in_thread is not None and in_thread.copied
    assert await store.locate(IN_GENERAL, "discord:G1:C1:", "ts1") is not None
    assert await store.locate(IN_GENERAL, "discord:G1:C4:", "ts1") is None  # other channel
    assert await store.locate(IN_GENERAL, "slack:", "ts1") is None
    assert await store.locate(IN_GENERAL, "discord:G1:C1:", "missing") is None
    for pattern in ["discord:G1:%", "discord:G1:_1:", "%", "_", "discord:G1:C1:*"]:
        assert await store.locate(IN_GENERAL, pattern, "ts1") is None, pattern  # literal
    assert await store.locate(IN_GENERAL, "", "ts1") is not None  # every conversation


async def test_around_a_message_a_time_or_the_end(store):
    await noted(store, GENERAL)
    c = conv(GENERAL)
    ids = [await say(store, c, f"m{n}", ago_days=10 - n) for n in range(6)]
    answer = await say(store, c, "a2", role="assistant", reply_to=ids[2], platform_id=None)

    async def around(**kw: Any) -> list[str]:
        return [m.text for m in await store.around(IN_GENERAL, c, **kw)]

    assert await around(message_id=ids[2], before=1, after=1) == ["m1", "m2", "a2"]
    assert await around(message_id=ids[2], before=2, after=3) == [
        "m0",
        "m1",
        "m2",
        "a2",
        "m3",
        "m4",
    ]
    assert await around(message_id=answer, before=1, after=0) == ["m2", "a2"]
    assert await around(message_id=ids[0], before=5, after=0) == ["m0"]
    assert await around(message_id=999_999) == []  # not in this conversation
    # The first message at or after the time (m3), the one before it in order (a2: an
    # answer sits after its question, whenever it was written), the one after.
    assert await around(time=time.time() - 7.5 * DAY, before=1, after=1) == ["a2", "m3", "m4"]
    assert await around(time=time.time() + DAY, before=2) == ["m4", "m5"]
    assert await around(before=3) == ["a2", "m3", "m4", "m5"][-3:]
    assert await around() == ["m0", "m1", "m2", "a2", "m3", "m4", "m5"]
    assert await around(before=-1, after=-1, message_id=ids[3]) == ["m3"]
    assert await store.around(IN_ELSEWHERE, c) == []
    assert await store.around(IN_GENERAL, conv(GENERAL, "nothing-here")) == []


async def test_note_place_files_a_new_conversation(store):
    await store.note_place("discord:G1:C1:T9", GENERAL)
    await say(store, "discord:G1:C1:T9", "thread talk")
    [hit] = await store.search(IN_GENERAL, SearchQuery("talk"))
    assert hit.place == GENERAL and hit.message.conversation == "discord:G1:C1:T9"


# New columns


async def test_rounds_and_usage_kind_are_stored(store):
    await say(store, conv(GENERAL), "question")
    await store.add_message(
        NewMessage(conv(GENERAL), "assistant", "B", "bot", "answer", 1, rounds='[{"n": 1}]')
    )
    rows = await store.messages(conv(GENERAL))
    assert [(m.rounds, m.copied) for m in rows] == [("", False), ('[{"n": 1}]', False)]
    await store.record_usage(UsageRecord("discord", "c", "U1", "m", 1, 2, 0.0, 1.0, "ok"))
    await store.record_usage(
        UsageRecord("discord", "c", "U1", "m", 1, 2, 0.0, 1.0, "ok", kind="tool_round")
    )
    assert await raw(store, "SELECT kind FROM usage ORDER BY id") == [("reply",), ("tool_round",)]
    assert (await store.usage_totals()).calls == 2


async def raw(store: Store, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql`, read straight from the backend's database."""
    from bot.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return await store._run(lambda: [tuple(r) for r in store.db.execute(sql).fetchall()])
    async with store.pool.connection() as conn:  # type: ignore[attr-defined]
        cursor = await conn.execute(sql)
        return [tuple(r.values()) for r in await cursor.fetchall()]


# A database the previous release created


async def old_database(backend: str, where: str) -> None:
    """Create `where` with only the first migration, filled as the old code filled it."""
    rows = [
        ("discord:G1:C1:", "p1", "user", "U1", "Alice", "the migration canary", 1000.0),
        ("discord:G1:C1:", None, "assistant", "B", "bot", "canary answer", 1001.0),
        ("discord:G1:C1:T1", "p1", "user", "U1", "Alice", "the migration canary", 1000.0),
        ("discord:G1:C2:", "p2", "user", "U2", "Bob", "a private canary", 1002.0),
    ]
    conversations = sorted({r[0] for r in rows})
    insert = (
        "INSERT INTO messages(conversation, platform_id, role, author_id, author_name, text, "
        "thinking, attachments, tokens, created_at) VALUES ({})"
    )
    if backend == "sqlite":
        from sqlite_utils import Database

        from bot.store.sqlite import migrations

        db = Database(where)
        migrations.apply(db, stop_before="m002_places_and_search")
        with db.atomic():
            for key in conversations:
                db.execute("INSERT INTO conversations VALUES (?, 0, 0)", [key])
            for r in rows:
                db.execute(insert.format(", ".join("?" * 10)), [*r[:6], "", "[]", 3, r[6]])
            db.execute(
                "INSERT INTO usage(created_at, platform, conversation, user_id, model, "
                "prompt_tokens, completion_tokens, cost_usd, latency_ms, outcome) "
                "VALUES (1, 'discord', 'c', 'U1', 'm', 1, 1, 0, 1, 'ok')"
            )
        db.close()
        return
    import psycopg
    from psycopg import sql

    from bot.store.postgres import MIGRATIONS

    try:
        connection = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # no server here: say so rather than fail
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    async with connection as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(where)))
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(where)))
        name, statements = MIGRATIONS[0]
        await conn.execute(statements)
        await conn.execute(
            "CREATE TABLE teambot_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        await conn.execute("INSERT INTO teambot_migrations VALUES (%s, 0)", [name])
        for key in conversations:
            await conn.execute("INSERT INTO conversations VALUES (%s, 0, 0)", [key])
        for r in rows:
            await conn.execute(insert.format(", ".join(["%s"] * 10)), [*r[:6], "", "[]", 3, r[6]])
        await conn.execute(
            "INSERT INTO usage(created_at, platform, conversation, user_id, model, "
            "prompt_tokens, completion_tokens, cost_usd, latency_ms, outcome) "
            "VALUES (1, 'discord', 'c', 'U1', 'm', 1, 1, 0, 1, 'ok')"
        )


async def test_a_database_from_before_search_is_migrated(place):
    backend, where = place
    await old_database(backend, where)
    store = await open_backend(backend, where)
    try:
        # Old conversations belong to their channel, readable from that channel only.
        [hit] = await store.search(IN_GENERAL, SearchQuery("canary"))
        assert hit.message.text == "the migration canary"
        assert hit.message.conversation == "discord:G1:C1:" and not hit.message.copied
        assert hit.place.key == GENERAL.key
        [thread_copy] = await store.messages("discord:G1:C1:T1")
        assert thread_copy.copied  # the old seeded copy was recognised
        assert await store.search(Scope("discord", RANDOM.key), SearchQuery("canary")) == []
        private = await store.search(IN_SECRET, SearchQuery("canary"))
        assert texts(private) == ["a private canary"]
        assert await raw(store, "SELECT kind FROM usage") == [("reply",)]
        # And it goes on as a new database does.
        await store.note_place(conv(GENERAL), GENERAL)
        await say(store, conv(GENERAL), "a new canary")
        assert len(await store.search(Scope("discord", RANDOM.key), SearchQuery("canary"))) == 2
    finally:
        await store.aclose()
