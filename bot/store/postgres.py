"""The PostgreSQL backend, for running several bot processes on one database.

psycopg 3 is natively async, so no worker thread is needed; a small connection pool
serves every coroutine. The schema mirrors the SQLite one, and the same contract
tests (tests/test_store.py) run against both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot.cluster import Cluster, LocalCluster
from bot.errors import ConfigError
from bot.store import (
    INSERT_COLUMNS,
    Asked,
    AuditEntry,
    Budget,
    FeedbackReport,
    Hit,
    Hold,
    NewMessage,
    Orphan,
    PlaceInfo,
    RatedAnswer,
    Scope,
    SearchQuery,
    StoredMessage,
    UsageRecord,
    UsageRow,
    UsageTotals,
    Vote,
    orphan_from_row,
)
from bot.store.pg_cluster import (
    ADD_TURN,
    ADD_TURN_FIRST,
    LIVE_OWNERS,
    TURN_LOCK,
    TURNS_MIGRATION,
    PostgresCluster,
)
from bot.store.search import (
    CANDIDATES,
    FORGOTTEN,
    MEMORY,
    PURGE_BATCH,
    RECENCY_SECONDS,
    SEARCHABLE_ROW,
    SPEND_LOCK,
    Where,
    clamp_context,
    clamp_span,
    hit_from_row,
    hits_wanted,
    place_values,
    prefix_end,
    readable_spaces,
    search_terms,
    searched_places,
    spend_grant,
    spend_limit,
    user_export,
)
from bot.types import DM

POSITION = "coalesce(reply_to, id)"
# Every column but `tsv`, which only search reads (and which is large to send).
COLUMNS = ", ".join(("id", *INSERT_COLUMNS, "updated_at"))
M_COLUMNS = ", ".join(f"m.{column}" for column in COLUMNS.split(", "))
# Only searchable rows (see SEARCHABLE_ROW) have a `tsv`; it is NULL for the rest, so
# they cost neither the tsvector nor index entries.
SEARCHABLE = SEARCHABLE_ROW.format("")
# A message takes its conversation's place (kept equal by a trigger, see m002); the last
# parameter is the conversation again.
INSERT_MESSAGE = (
    "INSERT INTO messages({}, place) "
    "VALUES ({}, (SELECT place FROM conversations WHERE key = %s)) "
    "ON CONFLICT DO NOTHING RETURNING id"
).format(", ".join(INSERT_COLUMNS), ", ".join(["%s"] * len(INSERT_COLUMNS)))

MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_initial",
        f"""
        CREATE TABLE conversations (
            key TEXT PRIMARY KEY, created_at DOUBLE PRECISION, window_start BIGINT DEFAULT 0);
        CREATE TABLE messages (
            id BIGSERIAL PRIMARY KEY, conversation TEXT NOT NULL, platform_id TEXT,
            role TEXT NOT NULL, author_id TEXT, author_name TEXT, text TEXT NOT NULL,
            thinking TEXT, attachments TEXT, tokens INTEGER NOT NULL, reply_to BIGINT,
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION);
        CREATE UNIQUE INDEX idx_messages_platform ON messages(conversation, platform_id);
        CREATE INDEX idx_messages_position ON messages(conversation, ({POSITION}), id);
        CREATE INDEX idx_messages_id ON messages(conversation, id);
        CREATE TABLE conversation_settings (
            conversation TEXT, name TEXT, value TEXT, PRIMARY KEY (conversation, name));
        CREATE TABLE usage (
            id BIGSERIAL PRIMARY KEY, created_at DOUBLE PRECISION, platform TEXT,
            conversation TEXT, user_id TEXT, model TEXT, prompt_tokens BIGINT,
            completion_tokens BIGINT, cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
            outcome TEXT);
        CREATE INDEX idx_usage_time ON usage(created_at);
        CREATE INDEX idx_usage_user ON usage(user_id, created_at);
        CREATE INDEX idx_usage_conversation ON usage(conversation, created_at);
        CREATE TABLE processed_events (key TEXT PRIMARY KEY, seen_at DOUBLE PRECISION);
        CREATE INDEX idx_events_seen ON processed_events(seen_at);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
        """,
    ),
    (
        "m002_places_and_search",
        f"""
        ALTER TABLE messages ADD COLUMN copied SMALLINT NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN rounds TEXT;
        ALTER TABLE usage ADD COLUMN kind TEXT NOT NULL DEFAULT 'reply';
        CREATE INDEX idx_messages_platform_id ON messages(platform_id);
        CREATE INDEX idx_messages_time ON messages(conversation, created_at);
        -- Threads seeded before `copied` existed: a copy has the platform id and time of
        -- an earlier row in another conversation. Marking them keeps them out of search.
        UPDATE messages SET copied = 1 WHERE platform_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM messages o WHERE o.platform_id = messages.platform_id
            AND o.id < messages.id AND o.created_at = messages.created_at
            AND o.conversation <> messages.conversation);
        CREATE TABLE places (
            key TEXT PRIMARY KEY, platform TEXT NOT NULL, space TEXT NOT NULL, name TEXT,
            visibility TEXT NOT NULL, updated_at DOUBLE PRECISION);
        ALTER TABLE conversations ADD COLUMN place TEXT;
        -- Conversations from before places were noted belong to their channel; with no
        -- `places` row their visibility is unknown, so only that channel itself reads them.
        UPDATE conversations SET place = array_to_string((string_to_array(key, ':'))[1:3], ':');
        CREATE INDEX idx_conversations_place ON conversations(place);
        -- `messages.place` repeats its conversation's place, so search filters by place
        -- without a join, and the planner sees how many messages a place holds.
        ALTER TABLE messages ADD COLUMN place TEXT;
        UPDATE messages m SET place = c.place FROM conversations c WHERE c.key = m.conversation;
        CREATE INDEX idx_messages_place ON messages(place);
        CREATE FUNCTION teambot_conversation_place() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE messages SET place = NEW.place WHERE conversation = NEW.key;
            RETURN NULL;
        END $$;
        CREATE TRIGGER conversations_place AFTER UPDATE OF place ON conversations
            FOR EACH ROW WHEN (NEW.place IS DISTINCT FROM OLD.place)
            EXECUTE FUNCTION teambot_conversation_place();
        -- Who wrote searchable messages, under every name they had: an author filter
        -- finds their ids here and their messages through the index.
        CREATE TABLE authors (
            author_id TEXT NOT NULL, author_name TEXT NOT NULL,
            PRIMARY KEY (author_id, author_name));
        INSERT INTO authors SELECT DISTINCT coalesce(author_id, ''), coalesce(author_name, '')
            FROM messages WHERE {SEARCHABLE};
        CREATE FUNCTION teambot_note_author() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO authors VALUES (coalesce(NEW.author_id, ''), coalesce(NEW.author_name, ''))
                ON CONFLICT DO NOTHING;
            RETURN NULL;
        END $$;
        CREATE TRIGGER authors_insert AFTER INSERT ON messages FOR EACH ROW
            WHEN ({SEARCHABLE_ROW.format("NEW.")})
            EXECUTE FUNCTION teambot_note_author();
        CREATE INDEX idx_messages_author ON messages(author_id);
        CREATE INDEX idx_messages_created ON messages(created_at, id);
        -- Adding the column computes it for every existing row (and rewrites the table,
        -- which also drops the dead rows the updates above left).
        ALTER TABLE messages ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
            CASE WHEN {SEARCHABLE} THEN to_tsvector('english', coalesce(text, '')) END) STORED;
        CREATE INDEX idx_messages_tsv ON messages USING GIN (tsv) WHERE tsv IS NOT NULL;
        """,
    ),
    (
        "m003_key_prefixes",
        """
        -- Conversations whose key starts with a prefix (`span`), as a range of this index:
        -- byte order whatever the database's collation, so the range is exactly them.
        CREATE INDEX idx_conversations_key_c ON conversations (key COLLATE "C");
        """,
    ),
    (
        "m004_spend",
        """
        -- Money set aside for model calls in flight (see `Store.reserve`).
        CREATE TABLE spend_holds (
            id BIGSERIAL PRIMARY KEY, platform TEXT NOT NULL, user_id TEXT NOT NULL,
            conversation TEXT NOT NULL, amount DOUBLE PRECISION NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL);
        CREATE INDEX idx_spend_holds_user ON spend_holds(platform, user_id, created_at);
        CREATE INDEX idx_spend_holds_conversation
            ON spend_holds(conversation COLLATE "C", created_at);
        CREATE INDEX idx_spend_holds_expiry ON spend_holds(expires_at);
        CREATE TABLE spend_limits (
            scope TEXT PRIMARY KEY, amount DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL);
        CREATE TABLE audit (
            id BIGSERIAL PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL,
            platform TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
            detail TEXT NOT NULL);
        CREATE INDEX idx_audit_time ON audit(created_at);
        -- What a user, a channel (a range of conversation keys, byte order as in m003)
        -- or the whole bot has spent since a time, summed from an index alone (cost_usd
        -- is in it). The time index replaces m001's, which it contains.
        CREATE INDEX idx_usage_spend_user ON usage(platform, user_id, created_at)
            INCLUDE (cost_usd);
        CREATE INDEX idx_usage_spend_conversation ON usage(conversation COLLATE "C", created_at)
            INCLUDE (cost_usd);
        CREATE INDEX idx_usage_spend_time ON usage(created_at) INCLUDE (conversation, cost_usd);
        DROP INDEX idx_usage_time;
        """,
    ),
    (
        "m005_cached_tokens",
        """
        -- Prompt tokens the provider served from its cache, billed at the cached rate.
        ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        "m006_extracts",
        """
        -- Text read out of attached files (OCR pages, transcripts) by content hash, so
        -- the same file is never paid for twice, across restarts too.
        CREATE TABLE extracts (
            key TEXT PRIMARY KEY, kind TEXT NOT NULL, content TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL);
        """,
    ),
    ("m007_turns", TURNS_MIGRATION),  # bot/store/pg_cluster.py
    (
        "m009_replies_in_progress",
        """
        -- Replies showing right now, so a crash never leaves one looking finished
        -- (bot/journal.py); `owner` is the process's cluster owner number.
        CREATE TABLE replies_in_progress (
            question BIGINT PRIMARY KEY, conversation TEXT NOT NULL, owner BIGINT NOT NULL,
            refs TEXT NOT NULL, shown TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL);
        """,
    ),
    (
        "m008_feedback_versions",
        """
        -- Stop, Regenerate and feedback (bot/control.py). A replaced answer moves from
        -- `messages` to `message_versions` with the same columns (and id), so no read of
        -- `messages` sees it.
        CREATE TABLE feedback (
            answer BIGINT NOT NULL, question BIGINT NOT NULL, conversation TEXT NOT NULL,
            platform TEXT NOT NULL, user_id TEXT NOT NULL, value SMALLINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (answer, platform, user_id));
        CREATE INDEX idx_feedback_time ON feedback(created_at);
        CREATE TABLE message_versions (
            id BIGINT PRIMARY KEY, conversation TEXT NOT NULL, platform_id TEXT,
            role TEXT NOT NULL, author_id TEXT, author_name TEXT, text TEXT NOT NULL,
            thinking TEXT, attachments TEXT, tokens INTEGER NOT NULL, reply_to BIGINT,
            created_at DOUBLE PRECISION NOT NULL, copied SMALLINT NOT NULL DEFAULT 0,
            rounds TEXT, replaced_by BIGINT NOT NULL,
            replaced_at DOUBLE PRECISION NOT NULL);
        CREATE INDEX idx_message_versions_question ON message_versions(reply_to);
        -- A question's own reasoning choice and who stopped its answer, when there is one.
        CREATE TABLE reply_notes (
            question BIGINT PRIMARY KEY, conversation TEXT NOT NULL, reasoning BOOLEAN,
            stopped_by TEXT, updated_at DOUBLE PRECISION NOT NULL);
        """,
    ),
]
VERSION_COLUMNS = ", ".join(("id", *INSERT_COLUMNS))
# Versions and notes of questions no longer stored (forgotten, purged) go with them.
DROP_ORPHANS = """
DELETE FROM message_versions v WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = v.reply_to);
DELETE FROM reply_notes r WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.question);
"""
EVENT_TTL_SECONDS = 7 * 24 * 3600
# `span` names up to this many conversations to the planner (see `PostgresStore.span`).
SPAN_KEYS = 1_000
# Planner settings for search only. Its rows are in cache far more often than the
# default random_page_cost (4, for spinning disks) assumes; with it the planner walks
# the newest messages checking each tsvector where the GIN index would fetch a few
# hundred rows. Parallel workers and JIT cost more to start than these bounded queries
# take. `set_config(..., true)` is SET LOCAL: it ends with the search's transaction.
SEARCH_SETTINGS = (
    "SELECT set_config('random_page_cost', '1.1', true), "
    "set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true)"
)


async def _connect(url: str) -> AsyncConnection[Any]:
    """One connection; ConfigError names DATABASE_URL and why it failed (no password)."""
    try:
        return await AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError("DATABASE_URL", f"cannot connect to PostgreSQL: {reason}") from None


class PostgresStore:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]]) -> None:
        self.pool = pool
        self.cluster: Cluster = LocalCluster()  # until `open` has the shared one running
        self._shared: PostgresCluster | None = None

    @classmethod
    async def open(cls, url: str, *, schema: str = "") -> PostgresStore:
        """Connect, create `schema` if named (tests use one each), apply migrations."""

        async def configure(conn: AsyncConnection[Any]) -> None:
            if schema:
                await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                await conn.commit()

        # One plain connection first: an unusable DATABASE_URL fails here with its reason.
        async with await _connect(url) as conn:
            if schema:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
        pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=10,
            open=False,
            configure=configure,
            kwargs={"row_factory": dict_row, "autocommit": True},
        )
        try:
            await pool.open(wait=True, timeout=10)
        except PoolTimeout:
            await pool.close()
            raise ConfigError("DATABASE_URL", "no connection to PostgreSQL within 10 s") from None
        store = cls(pool)
        await store._migrate()
        cluster = PostgresCluster(url, pool, schema)
        await cluster.start()
        store.cluster = store._shared = cluster
        return store

    async def _migrate(self) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            # One migrator at a time when several bot processes start together.
            await conn.execute("SELECT pg_advisory_xact_lock(7415550001)")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS teambot_migrations "
                "(name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
            )
            done = {
                r["name"]
                for r in await (
                    await conn.execute("SELECT name FROM teambot_migrations")
                ).fetchall()
            }
            for name, statements in MIGRATIONS:
                if name not in done:
                    await conn.execute(statements)
                    await conn.execute(
                        "INSERT INTO teambot_migrations VALUES (%s, %s)", [name, time.time()]
                    )

    async def _all(
        self, query: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def _count(self, query: str, params: Sequence[Any] = ()) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    # Messages

    async def add_message(self, message: NewMessage) -> int | None:
        async with self.pool.connection() as conn, conn.transaction():
            return await self._insert(conn, message)

    async def add_question(self, event_key: str, message: NewMessage) -> StoredMessage | None:
        async with self.pool.connection() as conn, conn.transaction():
            # First, so the conversation's questions are stored, and take their turns,
            # one transaction at a time across processes (see bot/store/pg_cluster.py).
            await conn.execute(TURN_LOCK, [message.conversation])
            if not await self._claim(conn, event_key):
                return None
            row_id = await self._insert(conn, message)
            if row_id is None:  # recorded earlier as context; it now carries the question
                cursor = await conn.execute(
                    "UPDATE messages SET text = %s, tokens = %s, updated_at = %s "
                    f"WHERE conversation = %s AND platform_id = %s RETURNING {COLUMNS}",
                    [
                        message.text,
                        message.tokens,
                        time.time(),
                        message.conversation,
                        message.platform_id,
                    ],
                )
            else:
                cursor = await conn.execute(
                    f"SELECT {COLUMNS} FROM messages WHERE id = %s", [row_id]
                )
            row = await cursor.fetchone()
            assert row is not None
            owner = self._shared.owner if self._shared else 0
            turn = await conn.execute(
                ADD_TURN_FIRST, [message.conversation, row["id"], owner, time.time()]
            )
            first = await turn.fetchone()
            if self._shared is not None and first is not None and first["first"]:
                self._shared.first_in_line(int(row["id"]))
            await conn.execute(  # its reply is in progress from now (bot/journal.py)
                "INSERT INTO replies_in_progress VALUES (%s, %s, %s, '[]', '[]', %s) "
                "ON CONFLICT (question) DO UPDATE SET owner = EXCLUDED.owner",
                [row["id"], message.conversation, owner, time.time()],
            )
            return StoredMessage.from_row(row)

    @staticmethod
    async def _insert(conn: AsyncConnection[dict[str, Any]], message: NewMessage) -> int | None:
        now = message.created_at or time.time()
        await conn.execute(
            "INSERT INTO conversations(key, created_at, window_start) VALUES (%s, %s, 0) "
            "ON CONFLICT DO NOTHING",
            [message.conversation, now],
        )
        cursor = await conn.execute(INSERT_MESSAGE, [*message.values(now), message.conversation])
        row = await cursor.fetchone()
        return int(row["id"]) if row else None

    async def update_message(
        self, conversation: str, platform_id: str, text: str, tokens: int
    ) -> bool:
        return (
            await self._count(
                "UPDATE messages SET text = %s, tokens = %s, updated_at = %s "
                "WHERE conversation = %s AND platform_id = %s",
                [text, tokens, time.time(), conversation, platform_id],
            )
            > 0
        )

    async def delete_message(self, conversation: str, platform_id: str) -> bool:
        return (
            await self._count(
                "DELETE FROM messages WHERE conversation = %s AND platform_id = %s",
                [conversation, platform_id],
            )
            > 0
        )

    async def messages(
        self, conversation: str, *, from_id: int = 0, to_id: int | None = None
    ) -> list[StoredMessage]:
        rows = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE conversation = %s AND {POSITION} >= %s "
            f"AND {POSITION} <= %s ORDER BY {POSITION}, id",
            [conversation, from_id, to_id if to_id is not None else 2**62],
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def messages_since(self, conversation: str, after_id: int) -> list[StoredMessage]:
        rows = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE conversation = %s AND id > %s ORDER BY id",
            [conversation, after_id],
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def seed(self, source: str, target: str, limit: int) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            # Two seeds of one new thread at once: the second waits here, then sees rows.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [target])
            taken = await conn.execute(
                "SELECT 1 FROM messages WHERE conversation = %s LIMIT 1", [target]
            )
            if await taken.fetchone():
                return 0
            cursor = await conn.execute(
                f"SELECT {COLUMNS} FROM messages WHERE conversation = %s "
                f"ORDER BY {POSITION} DESC, id DESC LIMIT %s",
                [source, limit],
            )
            rows = [StoredMessage.from_row(row) for row in reversed(await cursor.fetchall())]
            for row in rows:
                await self._insert(conn, row.copy_to(target))
            return len(rows)

    async def answered(self, conversation: str) -> bool:
        rows = await self._all(
            "SELECT 1 FROM messages WHERE conversation = %s AND role = 'assistant' LIMIT 1",
            [conversation],
        )
        return bool(rows)

    async def forget(self, conversation: str) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "DELETE FROM messages WHERE conversation = %s", [conversation]
            )
            await conn.execute(
                "UPDATE conversations SET window_start = 0 WHERE key = %s", [conversation]
            )
            await conn.execute(DROP_ORPHANS)
            return cursor.rowcount

    async def window(self, conversation: str) -> tuple[int, list[StoredMessage]]:
        rows = await self._all(
            "SELECT window_start FROM conversations WHERE key = %s", [conversation]
        )
        start = int(rows[0]["window_start"] or 0) if rows else 0
        return start, await self.messages(conversation, from_id=start)

    async def set_window_start(self, conversation: str, message_id: int) -> None:
        await self._count(
            "INSERT INTO conversations(key, created_at, window_start) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET window_start = EXCLUDED.window_start",
            [conversation, time.time(), message_id],
        )

    # Settings, events, meta

    async def settings(self, conversation: str) -> dict[str, str]:
        rows = await self._all(
            "SELECT name, value FROM conversation_settings WHERE conversation = %s",
            [conversation],
        )
        return {row["name"]: row["value"] for row in rows}

    async def settings_named(self, name: str) -> list[tuple[str, str]]:
        rows = await self._all(
            "SELECT conversation, value FROM conversation_settings WHERE name = %s "
            'ORDER BY conversation COLLATE "C"',
            [name],
        )
        return [(row["conversation"], row["value"]) for row in rows]

    async def set_setting(self, conversation: str, name: str, value: str | None) -> None:
        if value is None:
            await self._count(
                "DELETE FROM conversation_settings WHERE conversation = %s AND name = %s",
                [conversation, name],
            )
            return
        await self._count(
            "INSERT INTO conversation_settings VALUES (%s, %s, %s) "
            "ON CONFLICT (conversation, name) DO UPDATE SET value = EXCLUDED.value",
            [conversation, name, value],
        )

    async def claim_event(self, event_key: str) -> bool:
        async with self.pool.connection() as conn:
            return await self._claim(conn, event_key)

    @staticmethod
    async def _claim(conn: AsyncConnection[dict[str, Any]], event_key: str) -> bool:
        now = time.time()
        cursor = await conn.execute(
            "INSERT INTO processed_events VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [event_key, now],
        )
        claimed = cursor.rowcount > 0
        if claimed and hash(event_key) % 1000 == 0:
            await conn.execute(
                "DELETE FROM processed_events WHERE seen_at < %s", [now - EVENT_TTL_SECONDS]
            )
        return claimed

    async def get_meta(self, name: str) -> str | None:
        rows = await self._all("SELECT value FROM meta WHERE name = %s", [name])
        return str(rows[0]["value"]) if rows else None

    async def set_meta(self, name: str, value: str) -> None:
        await self._count(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = %s",
            [name, value, value],
        )

    # Extracts

    async def extract(self, key: str) -> str | None:
        rows = await self._all("SELECT content FROM extracts WHERE key = %s", [key])
        return str(rows[0]["content"]) if rows else None

    async def save_extract(self, key: str, kind: str, content: str) -> None:
        await self._count(
            "INSERT INTO extracts VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE "
            "SET kind = EXCLUDED.kind, content = EXCLUDED.content, "
            "created_at = EXCLUDED.created_at",
            [key, kind, content, time.time()],
        )

    # Usage

    async def record_usage(self, record: UsageRecord) -> None:
        await self._count(
            "INSERT INTO usage(created_at, platform, conversation, user_id, model, "
            "prompt_tokens, completion_tokens, cost_usd, latency_ms, outcome, kind, "
            "cached_tokens) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                record.created_at or time.time(),
                record.platform,
                record.conversation,
                record.user_id,
                record.model,
                record.prompt_tokens,
                record.completion_tokens,
                record.cost_usd,
                record.latency_ms,
                record.outcome,
                record.kind,
                record.cached_tokens,
            ],
        )

    async def usage_totals(
        self,
        *,
        since: float | None = None,
        user_id: str | None = None,
        conversation: str | None = None,
        kind: str | None = None,
    ) -> UsageTotals:
        where: list[str] = ["created_at >= %s"]
        params: list[Any] = [since or 0.0]
        if user_id is not None:
            where.append("user_id = %s")
            params.append(user_id)
        if conversation is not None:
            where.append("conversation = %s")
            params.append(conversation)
        if kind is not None:
            where.append("kind = %s")
            params.append(kind)
        row = (
            await self._all(
                "SELECT count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS p, "
                "coalesce(sum(completion_tokens), 0) AS c, coalesce(sum(cost_usd), 0) AS cost, "
                "coalesce(sum(cached_tokens), 0) AS cached "
                f"FROM usage WHERE {' AND '.join(where)}",
                params,
            )
        )[0]
        return UsageTotals(
            int(row["calls"]),
            int(row["p"]),
            int(row["c"]),
            float(row["cost"]),
            int(row["cached"]),
        )

    async def usage_rows(self, *, since: float | None = None) -> Sequence[UsageRow]:
        rows = await self._all(
            "SELECT to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, "
            "platform, user_id, count(*) AS calls, sum(prompt_tokens) AS p, "
            "sum(completion_tokens) AS c, sum(cost_usd) AS cost, sum(cached_tokens) AS cached "
            "FROM usage WHERE created_at >= %s GROUP BY day, platform, user_id "
            "ORDER BY day, platform, user_id",
            [since or 0.0],
        )
        return [
            UsageRow(
                r["day"],
                r["platform"],
                r["user_id"],
                UsageTotals(
                    int(r["calls"]), int(r["p"]), int(r["c"]), float(r["cost"]), int(r["cached"])
                ),
            )
            for r in rows
        ]

    # Spending limits

    @staticmethod
    async def _spent(
        conn: AsyncConnection[dict[str, Any]], budgets: Sequence[Budget], now: float
    ) -> dict[str, tuple[float, float | None]]:
        """scope -> (spent incl. live holds, limit after overrides), in one statement.

        A budget's filter applies alike to usage rows and to holds: every field of it that
        is set (platform, user_id, prefix) narrows it, and rows created before `since` do
        not count. That holds for holds too: one counts from when it was made (the store's
        clock at `reserve`) until it expires (`expires_at` after `now`), so a hold made
        before a period began (a call in flight at midnight) counts in none of that period's
        budgets, though its usage, recorded later, will.
        """
        if not budgets:
            return {}
        parts: list[str] = []
        params: dict[str, Any] = {"now": now}
        for n, budget in enumerate(budgets):
            where = [f"created_at >= %(since{n})s"]
            params |= {f"scope{n}": budget.scope, f"since{n}": budget.since}
            if budget.platform is not None:
                where.append(f"platform = %(platform{n})s")
                params[f"platform{n}"] = budget.platform
            if budget.user_id is not None:
                where.append(f"user_id = %(user{n})s")
                params[f"user{n}"] = budget.user_id
            if budget.prefix is not None and "\x00" in budget.prefix:
                where.append("FALSE")  # no key holds a NUL
            elif budget.prefix is not None:
                # A range of the "C" indexes (see `prefix_end`); starts_with() keeps it exact.
                where.append(
                    f'conversation COLLATE "C" >= %(prefix{n})s '
                    f"AND starts_with(conversation, %(prefix{n})s)"
                )
                params[f"prefix{n}"] = budget.prefix
                end = prefix_end(budget.prefix)
                if end is not None:
                    where.append(f'conversation COLLATE "C" < %(end{n})s')
                    params[f"end{n}"] = end
            matches = " AND ".join(where)
            parts.append(
                f"SELECT {n} AS n, "
                f"(SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE {matches}) AS used, "
                f"(SELECT coalesce(sum(amount), 0) FROM spend_holds "
                f"WHERE {matches} AND expires_at > %(now)s) AS held, "
                f"(SELECT amount FROM spend_limits WHERE scope = %(scope{n})s) AS override"
            )
        # Never a prepared statement: a generic plan would not see the times and prefixes
        # that decide between the time index and the conversation one.
        cursor = await conn.execute(" UNION ALL ".join(parts), params, prepare=False)
        totals: dict[str, tuple[float, float | None]] = {}
        for row in sorted(await cursor.fetchall(), key=lambda row: int(row["n"])):
            budget = budgets[row["n"]]
            spent = float(row["used"]) + float(row["held"])
            totals[budget.scope] = (spent, spend_limit(budget, row["override"]))
        return totals

    async def reserve(
        self, budgets: Sequence[Budget], want: float, least: float, hold: Hold
    ) -> tuple[float, int | None, dict[str, float]]:
        """One transaction under an advisory lock (SPEND_LOCK): every process's reservations
        take turns, so no two read the same room left and both take it."""
        budgets = list(budgets)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [SPEND_LOCK])
            # Read committed: each statement from here on sees what earlier holders of
            # the lock committed.
            now = time.time()
            await conn.execute("DELETE FROM spend_holds WHERE expires_at <= %s", [now])
            granted, lefts = spend_grant(await self._spent(conn, budgets, now), want, least)
            if granted is None:
                return 0.0, None, lefts
            cursor = await conn.execute(
                "INSERT INTO spend_holds(platform, user_id, conversation, amount, created_at, "
                "expires_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                [hold.platform, hold.user_id, hold.conversation, granted, now, hold.expires_at],
            )
            row = await cursor.fetchone()
            assert row is not None
            return granted, int(row["id"]), lefts

    async def release(self, hold_id: int) -> None:
        await self._count("DELETE FROM spend_holds WHERE id = %s", [hold_id])

    async def spent(self, budgets: Sequence[Budget]) -> dict[str, tuple[float, float | None]]:
        async with self.pool.connection() as conn:
            return await self._spent(conn, list(budgets), time.time())

    async def has_spend_limits(self) -> bool:
        return await self._count("SELECT 1 FROM spend_limits LIMIT 1") > 0

    async def set_spend_limit(self, scope: str, amount: float | None) -> None:
        if amount is None:
            await self._count("DELETE FROM spend_limits WHERE scope = %s", [scope])
            return
        await self._count(
            "INSERT INTO spend_limits(scope, amount, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (scope) DO UPDATE SET amount = EXCLUDED.amount, "
            "updated_at = EXCLUDED.updated_at",
            [scope, amount, time.time()],
        )

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._count(
            "INSERT INTO audit(created_at, platform, actor, action, detail) "
            "VALUES (%s, %s, %s, %s, %s)",
            [
                entry.created_at if entry.created_at is not None else time.time(),
                entry.platform,
                entry.actor,
                entry.action,
                entry.detail,
            ],
        )

    async def audit_entries(self, *, since: float = 0.0) -> list[AuditEntry]:
        rows = await self._all(
            "SELECT created_at, platform, actor, action, detail FROM audit "
            "WHERE created_at >= %s ORDER BY created_at, id",
            [since],
        )
        return [
            AuditEntry(r["platform"], r["actor"], r["action"], r["detail"], r["created_at"])
            for r in rows
        ]

    # What it keeps and forgets

    @staticmethod
    def _dm_conversations(platform: str | None) -> str:
        """SQL for the DM conversations (on `platform`, unless None) `user` wrote in."""
        sql = (
            "SELECT DISTINCT m.conversation FROM messages m "
            "JOIN conversations c ON c.key = m.conversation JOIN places p ON p.key = c.place "
            f"WHERE m.author_id = %(user)s AND p.visibility = '{DM}'"
        )
        if platform is not None:
            sql += " AND p.platform = %(platform)s AND starts_with(m.conversation, %(prefix)s)"
        return sql

    @staticmethod
    def _user_params(platform: str | None, user_id: str) -> dict[str, Any]:
        return {
            "user": user_id,
            "platform": platform,
            "prefix": f"{platform}:",
            "memory": MEMORY,
            "forgotten": FORGOTTEN,
        }

    async def forget_user(self, platform: str, user_id: str) -> int:
        params = self._user_params(platform, user_id)
        mine = "author_id = %(user)s AND starts_with(conversation, %(prefix)s)"
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(self._dm_conversations(platform), params)
            params["dms"] = [row["conversation"] for row in await cursor.fetchall()]
            # Summaries may hold their words: those of every conversation they wrote in go.
            await conn.execute(
                "DELETE FROM conversation_settings WHERE name = %(memory)s AND conversation IN "
                f"(SELECT DISTINCT conversation FROM messages WHERE {mine})",
                params,
            )
            # The whole DM, the bot's answers too.
            cursor = await conn.execute(
                "DELETE FROM messages WHERE conversation = ANY(%(dms)s)", params
            )
            deleted = cursor.rowcount
            await conn.execute(
                "UPDATE conversations SET window_start = 0 WHERE key = ANY(%(dms)s)", params
            )
            cursor = await conn.execute(f"DELETE FROM messages WHERE {mine}", params)
            deleted += cursor.rowcount
            await conn.execute(
                "UPDATE usage SET user_id = %(forgotten)s "
                "WHERE platform = %(platform)s AND user_id = %(user)s",
                params,
            )
            await conn.execute(
                "DELETE FROM authors WHERE author_id = %(user)s "
                "AND NOT EXISTS (SELECT 1 FROM messages WHERE author_id = %(user)s)",
                params,
            )
            await conn.execute(
                "DELETE FROM feedback WHERE platform = %(platform)s AND user_id = %(user)s",
                params,
            )
            await conn.execute(DROP_ORPHANS)
        return deleted

    async def export_user(self, platform: str | None, user_id: str) -> dict[str, Any]:
        params = self._user_params(platform, user_id)
        dms = self._dm_conversations(platform)
        on_platform = "" if platform is None else " AND platform = %(platform)s"
        in_prefix = "" if platform is None else " AND starts_with(conversation, %(prefix)s)"
        messages = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE (author_id = %(user)s{in_prefix}) "
            f"OR conversation IN ({dms}) ORDER BY id",
            params,
        )
        usage = await self._all(
            f"SELECT * FROM usage WHERE user_id = %(user)s{on_platform} ORDER BY created_at, id",
            params,
        )
        settings = await self._all(
            "SELECT conversation, name, value FROM conversation_settings "
            f'WHERE conversation IN ({dms}) ORDER BY conversation COLLATE "C", name',
            params,
        )
        audit = await self._all(
            "SELECT created_at, platform, actor, action, detail FROM audit "
            f"WHERE actor = %(user)s{on_platform} ORDER BY created_at, id",
            params,
        )
        entries = [
            AuditEntry(r["platform"], r["actor"], r["action"], r["detail"], r["created_at"])
            for r in audit
        ]
        return user_export(platform, user_id, messages, usage, settings, entries)

    async def purge_older(self, before: float) -> int:
        # What was read out of files is message text too: it goes with them.
        await self._count("DELETE FROM extracts WHERE created_at < %s", [before])
        total = 0
        while True:  # in batches: short transactions, other writers go in between
            rows = await self._all(
                """
                WITH gone AS (
                    DELETE FROM messages WHERE id IN (
                        SELECT id FROM messages WHERE created_at < %(before)s
                        ORDER BY created_at, id LIMIT %(batch)s)
                    RETURNING conversation
                ), summaries AS (
                    DELETE FROM conversation_settings WHERE name = %(memory)s
                    AND conversation IN (SELECT conversation FROM gone)
                )
                SELECT count(*) AS n FROM gone
                """,
                {"before": before, "batch": PURGE_BATCH, "memory": MEMORY},
            )
            deleted = int(rows[0]["n"])
            total += deleted
            if deleted < PURGE_BATCH:
                await self._count(DROP_ORPHANS)
                return total

    # Places, search and reads within a scope

    async def note_place(self, conversation: str, place: PlaceInfo) -> None:
        now = time.time()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO places(key, platform, space, name, visibility, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                "name = EXCLUDED.name, visibility = EXCLUDED.visibility, "
                "updated_at = EXCLUDED.updated_at",
                place_values(place, now),
            )
            await conn.execute(
                "INSERT INTO conversations(key, created_at, window_start, place) "
                "VALUES (%s, %s, 0, %s) ON CONFLICT (key) DO UPDATE SET place = EXCLUDED.place",
                [conversation, now, place.key],
            )

    @staticmethod
    def _readable(scope: Scope, column: str) -> tuple[str, dict[str, Any]]:
        """SQL that is true when the place key in `column` is readable under `scope`.

        Its own place, or a place on record as public in one of the scope's spaces on its
        platform. A NULL place (never noted) matches neither.
        """
        sql = (
            f"({column} = %(own_place)s OR {column} IN (SELECT key FROM places "
            f"WHERE visibility = 'public' AND platform = %(platform)s "
            f"AND space = ANY(%(spaces)s)))"
        )
        params = {
            "own_place": scope.place or None,
            "platform": scope.platform,
            "spaces": list(readable_spaces(scope)),
        }
        return sql, params

    async def places(self, scope: Scope) -> list[PlaceInfo]:
        readable, params = self._readable(scope, "key")
        rows = await self._all(
            f"SELECT key, name, visibility FROM places WHERE {readable} ORDER BY name, key",
            params,
        )
        return [PlaceInfo(r["key"], r["name"] or "", r["visibility"]) for r in rows]

    async def search(self, scope: Scope, query: SearchQuery) -> list[Hit]:
        terms = search_terms(query.text)
        if not terms:
            return []
        now = time.time()
        wanted = hits_wanted(query)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(SEARCH_SETTINGS)
            where = await self._search_filter(conn, scope, query)
            if where is None:
                return []
            # All the terms first; plainto_tsquery reads no syntax, so any text is safe.
            every = "plainto_tsquery('english', %(all_terms)s)"
            where.params["all_terms"] = " ".join(terms)
            hits = await self._search_pass(conn, where, every, 1.0, wanted, [], now)
            if len(hits) < wanted and len(terms) > 1:  # fill up: messages with any term
                any_term = " || ".join(
                    f"plainto_tsquery('english', %(term{n})s)" for n in range(len(terms))
                )
                where.params |= {f"term{n}": term for n, term in enumerate(terms)}
                found = [hit.message.id for hit in hits]
                hits += await self._search_pass(
                    conn, where, f"({any_term})", 0.0, wanted - len(hits), found, now
                )
            return hits

    async def _search_filter(
        self, conn: AsyncConnection[dict[str, Any]], scope: Scope, query: SearchQuery
    ) -> Where | None:
        """The conditions a hit meets (on `m`), or None when nothing can meet them.

        Places and authors are looked up first, so the planner sees the very values
        (and from its statistics, how many messages they hold) when it plans the search.
        """
        readable, params = self._readable(scope, "key")
        cursor = await conn.execute(f"SELECT key FROM places WHERE {readable}", params)
        rows = await cursor.fetchall()
        places = searched_places(scope, query, (row["key"] for row in rows))
        if not places:
            return None
        where = Where([SEARCHABLE_ROW.format("m."), "m.place = ANY(%(places)s)"], {})
        where.params["places"] = places
        if query.author:
            cursor = await conn.execute(
                "SELECT DISTINCT author_id FROM authors WHERE author_id = %(author)s "
                "OR strpos(lower(author_name), lower(%(author)s)) > 0",
                {"author": query.author},
            )
            author_ids = [row["author_id"] for row in await cursor.fetchall()]
            if not author_ids:
                return None
            where.add(
                "m.author_id = ANY(%(author_ids)s) AND (m.author_id = %(author)s "
                "OR strpos(lower(m.author_name), lower(%(author)s)) > 0)",
                author_ids=author_ids,
                author=query.author,
            )
        if query.after is not None:
            where.add("m.created_at > %(after)s", after=query.after)
        if query.before is not None:
            where.add("m.created_at < %(before)s", before=query.before)
        return where

    async def _search_pass(
        self,
        conn: AsyncConnection[dict[str, Any]],
        where: Where,
        tsquery: str,
        tier: float,
        wanted: int,
        exclude: list[int],
        now: float,
    ) -> list[Hit]:
        """One query: the best `wanted` of the newest CANDIDATES matches in `where`.

        Newest by time, not id, so that a `before` filter starts the walk through the
        time index right there, rather than skipping every newer match first (the
        planner cannot know that ids grow with time).

        Ranked by the score in bot/store/search.py; relevance is ts_rank. `tier` is 1 for
        the all-terms pass, 0 for the any-term fill-up.
        """
        conditions = " AND ".join([f"m.tsv @@ {tsquery}", *where.conditions])
        if exclude:
            conditions += " AND NOT (m.id = ANY(%(exclude)s))"
        params = where.params | {"exclude": exclude, "tier": tier, "now": now}
        params |= {"wanted": wanted, "candidates": CANDIDATES, "recency": RECENCY_SECONDS}
        # Never a prepared statement: a generic plan would not see the words and places,
        # and the planner needs them to choose between the GIN index and walking the
        # newest messages.
        cursor = await conn.execute(
            f"""
            WITH candidates AS (
                SELECT m.id, m.created_at, ts_rank(m.tsv, {tsquery}) AS relevance
                FROM messages m WHERE {conditions}
                ORDER BY m.created_at DESC, m.id DESC LIMIT %(candidates)s
            ), ranked AS (
                SELECT id, %(tier)s + relevance / greatest(max(relevance) OVER (), 1e-9)
                    / (1.0 + greatest(%(now)s - created_at, 0.0) / %(recency)s) AS score
                FROM candidates ORDER BY score DESC, id DESC LIMIT %(wanted)s
            )
            SELECT {M_COLUMNS}, r.score, m.place AS place_key, p.name AS place_name,
                p.visibility AS place_visibility,
                ts_headline('english', m.text, {tsquery},
                    'StartSel=**, StopSel=**, MaxWords=30, MinWords=12, ShortWord=2')
                    AS snippet
            FROM ranked r
            JOIN messages m ON m.id = r.id
            LEFT JOIN places p ON p.key = m.place
            ORDER BY r.score DESC, m.id DESC
            """,
            params,
            prepare=False,
        )
        return [hit_from_row(row) for row in await cursor.fetchall()]

    async def locate(self, scope: Scope, prefix: str, platform_id: str) -> StoredMessage | None:
        readable, params = self._readable(scope, "m.place")
        rows = await self._all(
            f"SELECT {M_COLUMNS} FROM messages m WHERE m.platform_id = %(platform_id)s "
            f"AND starts_with(m.conversation, %(prefix)s) AND {readable} "
            f"ORDER BY m.copied, m.id LIMIT 1",
            params | {"platform_id": platform_id, "prefix": prefix},
        )
        return StoredMessage.from_row(rows[0]) if rows else None

    async def _may_read(self, scope: Scope, conversation: str) -> bool:
        readable, params = self._readable(scope, "place")
        rows = await self._all(
            f"SELECT 1 FROM conversations WHERE key = %(conversation)s AND {readable}",
            params | {"conversation": conversation},
        )
        return bool(rows)

    async def around(
        self,
        scope: Scope,
        conversation: str,
        *,
        message_id: int | None = None,
        time: float | None = None,
        before: int = 10,
        after: int = 10,
    ) -> list[StoredMessage]:
        if not await self._may_read(scope, conversation):
            return []
        before, after = clamp_context(before), clamp_context(after)
        if message_id is not None:
            pivot = await self._all(
                f"SELECT {POSITION} AS position, id FROM messages "
                f"WHERE conversation = %s AND id = %s",
                [conversation, message_id],
            )
        elif time is not None:
            pivot = await self._all(
                f"SELECT {POSITION} AS position, id FROM messages WHERE conversation = %s "
                f"AND created_at >= %s ORDER BY created_at, id LIMIT 1",
                [conversation, time],
            )
            if not pivot:  # after the last message: the newest ones
                return await self._recent(conversation, before)
        else:
            return await self._recent(conversation, before)
        if not pivot:
            return []
        at_position = [conversation, pivot[0]["position"], pivot[0]["id"]]
        earlier = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE conversation = %s "
            f"AND ({POSITION}, id) < (%s, %s) ORDER BY {POSITION} DESC, id DESC LIMIT %s",
            [*at_position, before],
        )
        later = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE conversation = %s "
            f"AND ({POSITION}, id) >= (%s, %s) ORDER BY {POSITION}, id LIMIT %s",
            [*at_position, after + 1],
        )
        return [StoredMessage.from_row(row) for row in [*reversed(earlier), *later]]

    async def span(
        self, scope: Scope, prefix: str, since: float, until: float, limit: int = 10_000
    ) -> list[StoredMessage]:
        """The newest `limit` readable originals created in [since, until) under `prefix`.

        The conversations under the prefix are looked up first, a range of
        idx_conversations_key_c (see `prefix_end`; starts_with() keeps it literal
        whatever the range). Named to the planner, their statistics tell it how many
        messages the span holds: few, and it reads each conversation's time range of
        idx_messages_time; many, and it walks idx_messages_created from `until` back,
        stopping at the limit. Past SPAN_KEYS conversations they stay a subquery.
        """
        if "\x00" in prefix or since >= until:  # no key holds a NUL
            return []
        readable, params = self._readable(scope, "m.place")
        keys = 'key COLLATE "C" >= %(prefix)s AND starts_with(key, %(prefix)s)'
        end = prefix_end(prefix)
        if end is not None:
            keys += ' AND key COLLATE "C" < %(end)s'
        params |= {"prefix": prefix, "end": end, "since": since, "until": until}
        params["limit"] = clamp_span(limit)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT key FROM conversations WHERE {keys} LIMIT {SPAN_KEYS + 1}", params
            )
            found = [row["key"] for row in await cursor.fetchall()]
            if not found:
                return []
            if len(found) <= SPAN_KEYS:
                conversations = "m.conversation = ANY(%(conversations)s)"
                params["conversations"] = found
            else:
                conversations = f"m.conversation IN (SELECT key FROM conversations WHERE {keys})"
            # Never a prepared statement: a generic plan would not see the conversations
            # and times, which decide between the two indexes.
            cursor = await conn.execute(
                f"SELECT {M_COLUMNS} FROM messages m WHERE {conversations} "
                f"AND m.created_at >= %(since)s AND m.created_at < %(until)s "
                f"AND m.copied = 0 AND {readable} "
                f"ORDER BY m.created_at DESC, m.id DESC LIMIT %(limit)s",
                params,
                prepare=False,
            )
            rows = await cursor.fetchall()
        return [StoredMessage.from_row(row) for row in reversed(rows)]

    async def _recent(self, conversation: str, limit: int) -> list[StoredMessage]:
        rows = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE conversation = %s "
            f"ORDER BY {POSITION} DESC, id DESC LIMIT %s",
            [conversation, limit],
        )
        return [StoredMessage.from_row(row) for row in reversed(rows)]

    # Stop, Regenerate and feedback

    async def asked(self, question: int) -> Asked | None:
        rows = await self._all(
            f"SELECT {M_COLUMNS}, c.window_start, p.key AS place_key, p.name AS place_name, "
            "p.visibility, n.reasoning, n.stopped_by, "
            f"EXISTS (SELECT 1 FROM turns t WHERE t.message_id = m.id "
            f"AND t.owner IN ({LIVE_OWNERS})) AS running "
            "FROM messages m LEFT JOIN conversations c ON c.key = m.conversation "
            "LEFT JOIN places p ON p.key = c.place "
            "LEFT JOIN reply_notes n ON n.question = m.id "
            "WHERE m.id = %s AND m.role = 'user'",
            [question],
        )
        if not rows:
            return None
        row = rows[0]
        asked = StoredMessage.from_row(row)
        place = None
        if row["place_key"] is not None:
            place = PlaceInfo(row["place_key"], row["place_name"] or "", row["visibility"])
        answers = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE conversation = %s AND {POSITION} = %s "
            "AND reply_to = %s AND role = 'assistant' ORDER BY id DESC LIMIT 1",
            [asked.conversation, question, question],
        )
        return Asked(
            asked,
            StoredMessage.from_row(answers[0]) if answers else None,
            place,
            row["reasoning"],
            int(row["window_start"] or 0),
            bool(row["running"]),
            row["stopped_by"],
        )

    async def note_reply(
        self,
        question: int,
        conversation: str,
        *,
        reasoning: bool | None = None,
        stopped_by: str | None = None,
    ) -> None:
        await self._count(
            "INSERT INTO reply_notes(question, conversation, reasoning, stopped_by, updated_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (question) DO UPDATE SET "
            "reasoning = coalesce(EXCLUDED.reasoning, reply_notes.reasoning), "
            "stopped_by = coalesce(EXCLUDED.stopped_by, reply_notes.stopped_by), "
            "updated_at = EXCLUDED.updated_at",
            [question, conversation, reasoning, stopped_by, time.time()],
        )

    async def replace_answer(self, question: int, answer: NewMessage) -> int:
        now = answer.created_at or time.time()
        async with self.pool.connection() as conn, conn.transaction():
            row_id = await self._insert(conn, answer)
            assert row_id is not None, "an answer has no platform id to clash"
            old = (
                f"FROM messages WHERE conversation = %s AND {POSITION} = %s AND reply_to = %s "
                "AND role = 'assistant' AND id <> %s"
            )
            params = [answer.conversation, question, question, row_id]
            await conn.execute(
                f"INSERT INTO message_versions({VERSION_COLUMNS}, replaced_by, replaced_at) "
                f"SELECT {VERSION_COLUMNS}, %s, %s {old} ON CONFLICT (id) DO NOTHING",
                [row_id, now, *params],
            )
            await conn.execute(f"DELETE {old}", params)
        return row_id

    async def answer_versions(self, question: int) -> list[StoredMessage]:
        rows = await self._all(
            f"SELECT {VERSION_COLUMNS} FROM message_versions WHERE reply_to = %s ORDER BY id",
            [question],
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def answer_posted(self, answer: int, platform_id: str) -> bool:
        # The unique (conversation, platform_id) index: a clash changes nothing.
        return (
            await self._count(
                "UPDATE messages SET platform_id = %s WHERE id = %s AND role = 'assistant' "
                "AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.platform_id = %s "
                "AND o.conversation = messages.conversation)",
                [platform_id, answer, platform_id],
            )
            > 0
        )

    async def vote(self, vote: Vote) -> int | None:
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT value FROM feedback WHERE answer = %s AND platform = %s "
                "AND user_id = %s FOR UPDATE",
                [vote.answer, vote.platform, vote.user_id],
            )
            before = await cursor.fetchone()
            await conn.execute(
                "INSERT INTO feedback(answer, question, conversation, platform, user_id, value, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (answer, platform, user_id) DO UPDATE SET "
                "value = EXCLUDED.value, created_at = EXCLUDED.created_at",
                [
                    vote.answer,
                    vote.question,
                    vote.conversation,
                    vote.platform,
                    vote.user_id,
                    vote.value,
                    time.time(),
                ],
            )
        return int(before["value"]) if before else None

    async def feedback_report(self, *, since: float, worst: int = 10) -> FeedbackReport:
        days = await self._all(
            "SELECT to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, "
            "count(*) FILTER (WHERE value > 0) AS up, count(*) FILTER (WHERE value < 0) AS down "
            "FROM feedback WHERE created_at >= %s GROUP BY day ORDER BY day",
            [since],
        )
        rated = await self._all(
            "SELECT f.answer, max(f.conversation) AS conversation, "
            "count(*) FILTER (WHERE f.value > 0) AS up, "
            "count(*) FILTER (WHERE f.value < 0) AS down, "
            "coalesce(max(m.platform_id), max(v.platform_id)) AS platform_id, "
            "coalesce(max(m.text), max(v.text), '') AS text "
            "FROM feedback f LEFT JOIN messages m ON m.id = f.answer "
            "LEFT JOIN message_versions v ON v.id = f.answer WHERE f.created_at >= %s "
            "GROUP BY f.answer HAVING count(*) FILTER (WHERE f.value < 0) > 0 "
            "ORDER BY sum(f.value) ASC, count(*) FILTER (WHERE f.value < 0) DESC, "
            "f.answer DESC LIMIT %s",
            [since, worst],
        )
        return FeedbackReport(
            [(r["day"], int(r["up"]), int(r["down"])) for r in days],
            [
                RatedAnswer(
                    int(r["answer"]),
                    r["conversation"],
                    r["platform_id"],
                    int(r["up"]),
                    int(r["down"]),
                    r["text"],
                )
                for r in rated
            ],
        )

    async def enter_turn(self, conversation: str, question: int) -> None:
        # As `add_question` does, under the conversation's turn lock (bot/store/pg_cluster.py).
        owner = self._shared.owner if self._shared else 0
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(TURN_LOCK, [conversation])
            await conn.execute(
                ADD_TURN + " ON CONFLICT (message_id) DO NOTHING",
                [conversation, question, owner, time.time()],
            )

    # Replies in progress

    async def reply_progress(
        self, question: int, refs: Sequence[str], shown: Sequence[str]
    ) -> None:
        await self._count(
            "UPDATE replies_in_progress SET refs = %s, shown = %s WHERE question = %s",
            [json.dumps(list(refs)), json.dumps(list(shown)), question],
        )

    async def reply_ended(self, question: int) -> None:
        await self._count("DELETE FROM replies_in_progress WHERE question = %s", [question])

    async def take_orphaned_replies(self, platform: str) -> list[Orphan]:
        # Whoever deletes a row recovers it, so two processes never both do.
        rows = await self._all(
            f"WITH gone AS (DELETE FROM replies_in_progress WHERE owner NOT IN ({LIVE_OWNERS}) "
            "AND conversation LIKE %s RETURNING *) SELECT gone.*, EXISTS (SELECT 1 FROM "
            "messages m WHERE m.reply_to = gone.question AND m.role = 'assistant') AS answered "
            "FROM gone",
            [f"{platform}:%"],
        )
        return [orphan_from_row(row) for row in rows]

    async def aclose(self) -> None:
        await self.cluster.aclose()
        await self.pool.close()
