"""The SQLite backend: sqlite-utils on a WAL database, driven from one worker thread.

sqlite3 connections are synchronous, so every call runs on a single dedicated thread
that owns the connection (`SerialWorker`); the event loop only awaits the result. One
writer thread also serialises writes, which is what SQLite wants anyway.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

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
from bot.store.search import (
    CANDIDATES,
    FORGOTTEN,
    MEMORY,
    PURGE_BATCH,
    RECENCY_SECONDS,
    SEARCHABLE_ROW,
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
from bot.store.worker import SerialWorker
from bot.types import DM

T = TypeVar("T")
EVENT_TTL_SECONDS = 7 * 24 * 3600  # Slack retries for minutes; replays after reconnects are rarer

POSITION = "coalesce(reply_to, id)"
# A message takes its conversation's place (see PLACE_TRIGGER); the last parameter is
# the conversation again.
INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages({}, place) "
    "VALUES ({}, (SELECT place FROM conversations WHERE key = ?))"
).format(", ".join(INSERT_COLUMNS), ", ".join(["?"] * len(INSERT_COLUMNS)))

migrations = Migrations("teambot")

# Stop, Regenerate and feedback (bot/control.py). A replaced answer moves from `messages`
# to `message_versions` with the same columns (and id), so no read of `messages` sees it.
VERSION_COLUMNS = ("id", *INSERT_COLUMNS)
FEEDBACK_VERSIONS_SCHEMA = (
    "CREATE TABLE feedback (answer INTEGER NOT NULL, question INTEGER NOT NULL, "
    "conversation TEXT NOT NULL, platform TEXT NOT NULL, user_id TEXT NOT NULL, "
    "value INTEGER NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (answer, platform, user_id))",
    "CREATE INDEX idx_feedback_time ON feedback(created_at)",
    "CREATE TABLE message_versions (id INTEGER PRIMARY KEY, conversation TEXT NOT NULL, "
    "platform_id TEXT, role TEXT NOT NULL, author_id TEXT, author_name TEXT, text TEXT NOT NULL, "
    "thinking TEXT, attachments TEXT, tokens INTEGER NOT NULL, reply_to INTEGER, "
    "created_at REAL NOT NULL, copied INTEGER NOT NULL DEFAULT 0, rounds TEXT, "
    "replaced_by INTEGER NOT NULL, replaced_at REAL NOT NULL)",
    "CREATE INDEX idx_message_versions_question ON message_versions(reply_to)",
    # A question's own reasoning choice and who stopped its answer, when there is one.
    "CREATE TABLE reply_notes (question INTEGER PRIMARY KEY, conversation TEXT NOT NULL, "
    "reasoning INTEGER, stopped_by TEXT, updated_at REAL NOT NULL)",
)
# Versions and notes of questions no longer stored (forgotten, purged) go with them.
DROP_ORPHANS = (
    "DELETE FROM message_versions WHERE NOT EXISTS "
    "(SELECT 1 FROM messages m WHERE m.id = message_versions.reply_to)",
    "DELETE FROM reply_notes WHERE NOT EXISTS "
    "(SELECT 1 FROM messages m WHERE m.id = reply_notes.question)",
)

# Search: SQLite's own settings (what both backends share is in bot/store/search.py).
# Under a filter holding fewer messages than this, search collects its ids first (see
# `SQLiteStore._narrow`); above it, matches are frequent enough to be found walking.
NARROW = 30_000
# Above this many messages after an `after` time, bounding the walk costs more than it saves.
RECENT = 100_000
# `span` reads a time range of each conversation under a prefix through their
# (conversation, created_at) index, unless fewer than SPAN_PROBE messages per conversation
# were created in the whole range: then it walks them through the created_at index.
SPAN_PROBE = 4
SPAN_CONVERSATIONS = 50_000  # conversations under a prefix counted, at the most
MMAP_BYTES = 1 << 30
# What a channel (a conversation prefix) has spent since a time is summed one of two ways
# (see `SQLiteStore._spent`): walking every usage row since then through the time index,
# when fewer than SPEND_PROBE are (a day's worth, usually), or else the prefix's range of
# the conversation index, which holds its whole history.
SPEND_PROBE = 20_000


# Only searchable rows (see SEARCHABLE_ROW) are indexed, which also keeps the index
# small, as the bot's answers are the long messages.
SEARCHABLE = "WHERE " + SEARCHABLE_ROW.format("messages.")
# An external-content FTS5 index over `messages.text`, kept in step by triggers. It only
# holds searchable rows, so a delete may only be issued for a row that was indexed
# (FTS5 trusts the text it is given); hence the same condition on both sides. Never run
# the 'rebuild' command on it: that would index every row.
FTS_SCHEMA = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', "
    "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages "
    f"WHEN {SEARCHABLE_ROW.format('new.')} BEGIN "
    f"INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); END",
    f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages "
    f"WHEN {SEARCHABLE_ROW.format('old.')} BEGIN "
    f"INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    f"END",
    f"CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, role, copied, platform_id "
    f"ON messages BEGIN "
    f"INSERT INTO messages_fts(messages_fts, rowid, text) SELECT 'delete', old.id, old.text "
    f"WHERE {SEARCHABLE_ROW.format('old.')}; "
    f"INSERT INTO messages_fts(rowid, text) SELECT new.id, new.text "
    f"WHERE {SEARCHABLE_ROW.format('new.')}; END",
)


# `messages.place` repeats its conversation's place, so search filters and indexes by
# place without a join per match. Kept equal here; messages are inserted with it.
PLACE_TRIGGER = (
    "CREATE TRIGGER conversations_place AFTER UPDATE OF place ON conversations "
    "WHEN new.place IS NOT old.place BEGIN "
    "UPDATE messages SET place = new.place WHERE conversation = new.key; END"
)
AUTHORS_TRIGGER = (
    f"CREATE TRIGGER authors_insert AFTER INSERT ON messages "
    f"WHEN {SEARCHABLE_ROW.format('new.')} BEGIN "
    f"INSERT OR IGNORE INTO authors(author_id, author_name) "
    f"VALUES (coalesce(new.author_id, ''), coalesce(new.author_name, '')); END"
)


@migrations()
def m001_initial(db: Database) -> None:
    db["conversations"].create(  # type: ignore[union-attr]
        {"key": str, "created_at": float, "window_start": int}, pk="key"
    )
    db["messages"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "conversation": str,
            "platform_id": str,
            "role": str,
            "author_id": str,
            "author_name": str,
            "text": str,
            "thinking": str,
            "attachments": str,
            "tokens": int,
            "reply_to": int,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"conversation", "role", "text", "tokens", "created_at"},
    )
    db.execute("CREATE UNIQUE INDEX idx_messages_platform ON messages(conversation, platform_id)")
    # A reply sorts right after the message it answers, even when other messages
    # arrived while it was being written; `position` is that order.
    db.execute(
        "CREATE INDEX idx_messages_position ON messages(conversation, coalesce(reply_to, id), id)"
    )
    db.execute("CREATE INDEX idx_messages_id ON messages(conversation, id)")
    db["conversation_settings"].create(  # type: ignore[union-attr]
        {"conversation": str, "name": str, "value": str}, pk=("conversation", "name")
    )
    db["usage"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "created_at": float,
            "platform": str,
            "conversation": str,
            "user_id": str,
            "model": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cost_usd": float,
            "latency_ms": float,
            "outcome": str,
        },
        pk="id",
    )
    db.execute("CREATE INDEX idx_usage_time ON usage(created_at)")
    db.execute("CREATE INDEX idx_usage_user ON usage(user_id, created_at)")
    db.execute("CREATE INDEX idx_usage_conversation ON usage(conversation, created_at)")
    db["processed_events"].create({"key": str, "seen_at": float}, pk="key")  # type: ignore[union-attr]
    db.execute("CREATE INDEX idx_events_seen ON processed_events(seen_at)")
    db["meta"].create({"name": str, "value": str}, pk="name")  # type: ignore[union-attr]


@migrations()
def m002_places_and_search(db: Database) -> None:
    db.execute("ALTER TABLE messages ADD COLUMN copied INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE messages ADD COLUMN rounds TEXT")
    db.execute("ALTER TABLE usage ADD COLUMN kind TEXT NOT NULL DEFAULT 'reply'")
    db.execute("CREATE INDEX idx_messages_platform_id ON messages(platform_id)")
    db.execute("CREATE INDEX idx_messages_time ON messages(conversation, created_at)")
    # Threads seeded before `copied` existed: a copy has the platform id and time of an
    # earlier row in another conversation. Marking them keeps them out of search.
    db.execute(
        "UPDATE messages SET copied = 1 WHERE platform_id IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM messages o WHERE o.platform_id = messages.platform_id "
        "AND o.id < messages.id AND o.created_at = messages.created_at "
        "AND o.conversation <> messages.conversation)"
    )
    db["places"].create(  # type: ignore[union-attr]
        {
            "key": str,
            "platform": str,
            "space": str,
            "name": str,
            "visibility": str,
            "updated_at": float,
        },
        pk="key",
        not_null={"platform", "space", "visibility"},
    )
    db.execute("ALTER TABLE conversations ADD COLUMN place TEXT")
    # Conversations from before places were noted belong to their channel; with no
    # `places` row their visibility is unknown, so only that channel itself reads them.
    keys = [row[0] for row in db.execute("SELECT key FROM conversations").fetchall()]
    db.conn.executemany(
        "UPDATE conversations SET place = ? WHERE key = ?",
        [(":".join(key.split(":")[:3]), key) for key in keys],
    )
    db.execute("CREATE INDEX idx_conversations_place ON conversations(place)")
    db.execute("ALTER TABLE messages ADD COLUMN place TEXT")
    db.execute(
        "UPDATE messages SET place = "
        "(SELECT c.place FROM conversations c WHERE c.key = messages.conversation)"
    )
    db.execute("CREATE INDEX idx_messages_place ON messages(place)")
    db.execute(PLACE_TRIGGER)
    for statement in FTS_SCHEMA:
        db.execute(statement)
    # Who wrote searchable messages, under every name they had: an author filter finds
    # the ids here, then the messages through the index, instead of reading every match.
    db.execute(
        "CREATE TABLE authors (author_id TEXT NOT NULL, author_name TEXT NOT NULL, "
        "PRIMARY KEY (author_id, author_name)) WITHOUT ROWID"
    )
    db.execute(AUTHORS_TRIGGER)
    db.execute(
        "INSERT OR IGNORE INTO authors SELECT DISTINCT coalesce(author_id, ''), "
        f"coalesce(author_name, '') FROM messages {SEARCHABLE}"
    )
    db.execute("CREATE INDEX idx_messages_author ON messages(author_id)")
    db.execute("CREATE INDEX idx_messages_created ON messages(created_at)")
    db.execute(f"INSERT INTO messages_fts(rowid, text) SELECT id, text FROM messages {SEARCHABLE}")


@migrations()
def m003_spend(db: Database) -> None:
    # Money set aside for model calls in flight (see `Store.reserve`). AUTOINCREMENT:
    # an id is never reused, so a late release cannot drop somebody else's hold.
    db.execute(
        "CREATE TABLE spend_holds (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "platform TEXT NOT NULL, user_id TEXT NOT NULL, conversation TEXT NOT NULL, "
        "amount REAL NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX idx_spend_holds_user ON spend_holds(platform, user_id, created_at)")
    db.execute("CREATE INDEX idx_spend_holds_conversation ON spend_holds(conversation, created_at)")
    db.execute("CREATE INDEX idx_spend_holds_expiry ON spend_holds(expires_at)")
    db.execute(
        "CREATE TABLE spend_limits (scope TEXT PRIMARY KEY, amount REAL NOT NULL, "
        "updated_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, created_at REAL NOT NULL, "
        "platform TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, "
        "detail TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX idx_audit_time ON audit(created_at)")
    # What a user, a channel or the whole bot has spent since a time, summed from the
    # index alone (cost_usd in it): one range each, however large the table. The time
    # and conversation indexes replace the narrower ones of m001, which they contain.
    db.execute(
        "CREATE INDEX idx_usage_spend_user ON usage(platform, user_id, created_at, cost_usd)"
    )
    db.execute("CREATE INDEX idx_usage_spend_time ON usage(created_at, conversation, cost_usd)")
    db.execute(
        "CREATE INDEX idx_usage_spend_conversation ON usage(conversation, created_at, cost_usd)"
    )
    db.execute("DROP INDEX idx_usage_time")
    db.execute("DROP INDEX idx_usage_conversation")


@migrations()
def m004_cached_tokens(db: Database) -> None:
    # Prompt tokens the provider served from its cache, billed at the cached rate.
    db.execute("ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")


@migrations()
def m005_extracts(db: Database) -> None:
    # Text read out of attached files (OCR pages, transcripts) by content hash, so the
    # same file is never paid for twice, across restarts too.
    db.execute(
        "CREATE TABLE extracts (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
        "content TEXT NOT NULL, created_at REAL NOT NULL)"
    )


@migrations()
def m006_feedback_versions(db: Database) -> None:
    for statement in FEEDBACK_VERSIONS_SCHEMA:
        db.execute(statement)


@migrations()
def m007_replies_in_progress(db: Database) -> None:
    # Replies showing right now, so a crash never leaves one looking finished (bot/journal.py).
    db.execute(
        "CREATE TABLE replies_in_progress (question INTEGER PRIMARY KEY, "
        "conversation TEXT NOT NULL, owner INTEGER NOT NULL, refs TEXT NOT NULL, "
        "shown TEXT NOT NULL, started_at REAL NOT NULL)"
    )


def _reason(exc: OSError | sqlite3.Error) -> str:
    """Why a database path can't be used, in a few words."""
    if isinstance(exc, FileExistsError):  # mkdir met a file where a directory should be
        return f"{exc.filename} is not a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._worker = SerialWorker("teambot-sqlite")
        self._db: Database | None = None
        self.cluster: Cluster = LocalCluster()  # one process per SQLite file

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        """Open (creating it and its directory if missing) and migrate the database file;
        ConfigError names DATABASE_URL when the path can't be used."""
        store = cls(path)
        try:
            await store._run(store._open)
        except (OSError, sqlite3.Error) as exc:
            store._worker.close()
            raise ConfigError("DATABASE_URL", f"cannot use {path}: {_reason(exc)}") from None
        return store

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        db = Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes (kill -9); only power loss may
        # drop the newest commits.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        # Reads through the OS page cache without copying: search looks up a message per
        # match it walks, and this makes each lookup about a third cheaper.
        db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        # Case-insensitive author names beyond ASCII, which SQLite's lower() leaves alone.
        conn.create_function("teambot_fold", 1, _fold, deterministic=True)
        migrations.apply(db)
        self._db = db

    @property
    def db(self) -> Database:
        assert self._db is not None, "store is closed"
        return self._db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args)

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    # Messages

    def _ensure_conversation(self, conversation: str, now: float) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO conversations(key, created_at, window_start) VALUES (?, ?, 0)",
            [conversation, now],
        )

    def _insert(self, message: NewMessage, now: float) -> int | None:
        """Within a transaction: insert `message`; its id, or None on a platform id clash."""
        self._ensure_conversation(message.conversation, now)
        cursor = self.db.execute(INSERT_MESSAGE, [*message.values(now), message.conversation])
        return cursor.lastrowid if cursor.rowcount else None

    def _add_message(self, message: NewMessage) -> int | None:
        with self.db.atomic():
            return self._insert(message, message.created_at or time.time())

    async def add_message(self, message: NewMessage) -> int | None:
        return await self._run(self._add_message, message)

    def _add_question(self, event_key: str, message: NewMessage) -> StoredMessage | None:
        now = message.created_at or time.time()
        with self.db.atomic():
            if not self._claim_row(event_key, now):
                return None
            row_id = self._insert(message, now)
            if row_id is None:  # recorded earlier as context; it now carries the question
                assert message.platform_id is not None, "only a platform id can clash"
                self.db.execute(
                    "UPDATE messages SET text = ?, tokens = ?, updated_at = ? "
                    "WHERE conversation = ? AND platform_id = ?",
                    [message.text, message.tokens, now, message.conversation, message.platform_id],
                )
                found = self._find(message.conversation, message.platform_id)
                if found is not None:
                    self._reply_started(found.id, message.conversation)
                return found
            self._reply_started(row_id, message.conversation)
        return message.stored(row_id, now)

    async def add_question(self, event_key: str, message: NewMessage) -> StoredMessage | None:
        return await self._run(self._add_question, event_key, message)

    def _find(self, conversation: str, platform_id: str) -> StoredMessage | None:
        rows = self._rows(
            "SELECT * FROM messages WHERE conversation = ? AND platform_id = ?",
            [conversation, platform_id],
        )
        return StoredMessage.from_row(rows[0]) if rows else None

    def _update(self, conversation: str, platform_id: str, text: str, tokens: int) -> bool:
        with self.db.atomic():
            cursor = self.db.execute(
                "UPDATE messages SET text = ?, tokens = ?, updated_at = ? "
                "WHERE conversation = ? AND platform_id = ?",
                [text, tokens, time.time(), conversation, platform_id],
            )
            return cursor.rowcount > 0

    async def update_message(
        self, conversation: str, platform_id: str, text: str, tokens: int
    ) -> bool:
        return await self._run(self._update, conversation, platform_id, text, tokens)

    def _delete(self, conversation: str, platform_id: str) -> bool:
        with self.db.atomic():
            cursor = self.db.execute(
                "DELETE FROM messages WHERE conversation = ? AND platform_id = ?",
                [conversation, platform_id],
            )
            return cursor.rowcount > 0

    async def delete_message(self, conversation: str, platform_id: str) -> bool:
        return await self._run(self._delete, conversation, platform_id)

    def _messages(self, conversation: str, from_id: int, to_id: int | None) -> list[StoredMessage]:
        rows = self._rows(
            f"SELECT * FROM messages WHERE conversation = ? "
            f"AND {POSITION} >= ? AND {POSITION} <= ? ORDER BY {POSITION}, id",
            [conversation, from_id, to_id if to_id is not None else 2**62],
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def messages(
        self, conversation: str, *, from_id: int = 0, to_id: int | None = None
    ) -> list[StoredMessage]:
        return await self._run(self._messages, conversation, from_id, to_id)

    def _since(self, conversation: str, after_id: int) -> list[StoredMessage]:
        rows = self._rows(
            "SELECT * FROM messages WHERE conversation = ? AND id > ? ORDER BY id",
            [conversation, after_id],
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def messages_since(self, conversation: str, after_id: int) -> list[StoredMessage]:
        return await self._run(self._since, conversation, after_id)

    def _recent(self, conversation: str, limit: int) -> list[StoredMessage]:
        rows = self._rows(
            f"SELECT * FROM messages WHERE conversation = ? "
            f"ORDER BY {POSITION} DESC, id DESC LIMIT ?",
            [conversation, limit],
        )
        return [StoredMessage.from_row(row) for row in reversed(rows)]

    def _seed(self, source: str, target: str, limit: int) -> int:
        with self.db.atomic():
            if self._rows("SELECT 1 FROM messages WHERE conversation = ? LIMIT 1", [target]):
                return 0
            rows = self._recent(source, limit)
            for row in rows:
                self._insert(row.copy_to(target), row.created_at)
            return len(rows)

    async def seed(self, source: str, target: str, limit: int) -> int:
        return await self._run(self._seed, source, target, limit)

    def _answered(self, conversation: str) -> bool:
        return bool(
            self._rows(
                "SELECT 1 FROM messages WHERE conversation = ? AND role = 'assistant' LIMIT 1",
                [conversation],
            )
        )

    async def answered(self, conversation: str) -> bool:
        return await self._run(self._answered, conversation)

    def _forget(self, conversation: str) -> int:
        with self.db.atomic():
            cursor = self.db.execute("DELETE FROM messages WHERE conversation = ?", [conversation])
            self.db.execute(
                "UPDATE conversations SET window_start = 0 WHERE key = ?", [conversation]
            )
            self._drop_orphans()
            return cursor.rowcount

    async def forget(self, conversation: str) -> int:
        return await self._run(self._forget, conversation)

    def _window(self, conversation: str) -> tuple[int, list[StoredMessage]]:
        rows = self._rows("SELECT window_start FROM conversations WHERE key = ?", [conversation])
        start = int(rows[0]["window_start"] or 0) if rows else 0
        return start, self._messages(conversation, start, None)

    async def window(self, conversation: str) -> tuple[int, list[StoredMessage]]:
        return await self._run(self._window, conversation)

    def _set_window_start(self, conversation: str, message_id: int) -> None:
        with self.db.atomic():
            self._ensure_conversation(conversation, time.time())
            self.db.execute(
                "UPDATE conversations SET window_start = ? WHERE key = ?",
                [message_id, conversation],
            )

    async def set_window_start(self, conversation: str, message_id: int) -> None:
        await self._run(self._set_window_start, conversation, message_id)

    # Settings, events, meta

    def _settings(self, conversation: str) -> dict[str, str]:
        rows = self._rows(
            "SELECT name, value FROM conversation_settings WHERE conversation = ?", [conversation]
        )
        return {row["name"]: row["value"] for row in rows}

    async def settings(self, conversation: str) -> dict[str, str]:
        return await self._run(self._settings, conversation)

    def _set_setting(self, conversation: str, name: str, value: str | None) -> None:
        with self.db.atomic():
            if value is None:
                self.db.execute(
                    "DELETE FROM conversation_settings WHERE conversation = ? AND name = ?",
                    [conversation, name],
                )
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO conversation_settings(conversation, name, value) "
                    "VALUES (?, ?, ?)",
                    [conversation, name, value],
                )

    async def set_setting(self, conversation: str, name: str, value: str | None) -> None:
        await self._run(self._set_setting, conversation, name, value)

    def _settings_named(self, name: str) -> list[tuple[str, str]]:
        rows = self._rows(
            "SELECT conversation, value FROM conversation_settings WHERE name = ? "
            "ORDER BY conversation",
            [name],
        )
        return [(row["conversation"], row["value"]) for row in rows]

    async def settings_named(self, name: str) -> list[tuple[str, str]]:
        return await self._run(self._settings_named, name)

    def _claim_row(self, event_key: str, now: float) -> bool:
        """Within a transaction: True if `event_key` was not claimed before."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO processed_events(key, seen_at) VALUES (?, ?)",
            [event_key, now],
        )
        claimed = cursor.rowcount > 0
        if claimed and cursor.lastrowid and cursor.lastrowid % 1000 == 0:
            self.db.execute(
                "DELETE FROM processed_events WHERE seen_at < ?", [now - EVENT_TTL_SECONDS]
            )
        return claimed

    def _claim(self, event_key: str) -> bool:
        with self.db.atomic():
            return self._claim_row(event_key, time.time())

    async def claim_event(self, event_key: str) -> bool:
        return await self._run(self._claim, event_key)

    def _get_meta(self, name: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE name = ?", [name])
        return str(rows[0]["value"]) if rows else None

    async def get_meta(self, name: str) -> str | None:
        return await self._run(self._get_meta, name)

    def _set_meta(self, name: str, value: str) -> None:
        with self.db.atomic():
            self.db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", [name, value])

    async def set_meta(self, name: str, value: str) -> None:
        await self._run(self._set_meta, name, value)

    # Extracts

    def _extract(self, key: str) -> str | None:
        rows = self._rows("SELECT content FROM extracts WHERE key = ?", [key])
        return str(rows[0]["content"]) if rows else None

    async def extract(self, key: str) -> str | None:
        return await self._run(self._extract, key)

    def _save_extract(self, key: str, kind: str, content: str) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO extracts(key, kind, content, created_at) "
                "VALUES (?, ?, ?, ?)",
                [key, kind, content, time.time()],
            )

    async def save_extract(self, key: str, kind: str, content: str) -> None:
        await self._run(self._save_extract, key, kind, content)

    # Usage

    def _record_usage(self, record: UsageRecord) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO usage(created_at, platform, conversation, user_id, model, "
                "prompt_tokens, completion_tokens, cost_usd, latency_ms, outcome, kind, "
                "cached_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    async def record_usage(self, record: UsageRecord) -> None:
        await self._run(self._record_usage, record)

    def _usage_totals(
        self,
        since: float | None,
        user_id: str | None,
        conversation: str | None,
        kind: str | None,
    ) -> UsageTotals:
        where: list[str] = ["created_at >= ?"]
        params: list[Any] = [since or 0.0]
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if conversation is not None:
            where.append("conversation = ?")
            params.append(conversation)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        row = self._rows(
            "SELECT count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS p, "
            "coalesce(sum(completion_tokens), 0) AS c, coalesce(sum(cost_usd), 0) AS cost, "
            f"coalesce(sum(cached_tokens), 0) AS cached FROM usage WHERE {' AND '.join(where)}",
            params,
        )[0]
        return UsageTotals(row["calls"], row["p"], row["c"], row["cost"], row["cached"])

    async def usage_totals(
        self,
        *,
        since: float | None = None,
        user_id: str | None = None,
        conversation: str | None = None,
        kind: str | None = None,
    ) -> UsageTotals:
        return await self._run(self._usage_totals, since, user_id, conversation, kind)

    def _usage_rows(self, since: float | None) -> list[UsageRow]:
        rows = self._rows(
            "SELECT date(created_at, 'unixepoch') AS day, platform, user_id, count(*) AS calls, "
            "sum(prompt_tokens) AS p, sum(completion_tokens) AS c, sum(cost_usd) AS cost, "
            "sum(cached_tokens) AS cached "
            "FROM usage WHERE created_at >= ? GROUP BY day, platform, user_id "
            "ORDER BY day, platform, user_id",
            [since or 0.0],
        )
        return [
            UsageRow(
                r["day"],
                r["platform"],
                r["user_id"],
                UsageTotals(r["calls"], r["p"], r["c"], r["cost"], r["cached"]),
            )
            for r in rows
        ]

    async def usage_rows(self, *, since: float | None = None) -> Sequence[UsageRow]:
        return await self._run(self._usage_rows, since)

    # Spending limits

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[None]:
        """A transaction that takes the database's write lock before it reads anything.

        BEGIN IMMEDIATE: another process (another connection) reserving at the same time
        waits here (up to the connection's 30 s busy timeout) until this one commits,
        then reads what it wrote. This process's own calls are already one at a time,
        on the worker thread.
        """
        conn = self.db.conn
        if conn.in_transaction:  # never, as every call commits; a savepoint then
            with self.db.atomic():
                yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    def _spend_source(self, budget: Budget) -> str:
        """The usage index that sums `budget`'s rows cheapest (see SPEND_PROBE)."""
        if budget.user_id is not None and budget.platform is not None:
            return "idx_usage_spend_user"
        if budget.user_id is not None:
            return "idx_usage_user"
        if budget.prefix is None:
            return "idx_usage_spend_time"
        recent = self._rows(
            "SELECT count(*) AS n FROM (SELECT 1 FROM usage INDEXED BY idx_usage_spend_time "
            "WHERE created_at >= :since LIMIT :probe)",
            {"since": budget.since, "probe": SPEND_PROBE},
        )[0]["n"]
        return "idx_usage_spend_time" if recent < SPEND_PROBE else "idx_usage_spend_conversation"

    def _spent(
        self, budgets: Sequence[Budget], now: float
    ) -> dict[str, tuple[float, float | None]]:
        """scope -> (spent incl. live holds, limit after overrides), in one statement
        (after one count for a prefix: see SPEND_PROBE).

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
            where = [f"created_at >= :since{n}"]
            params |= {f"scope{n}": budget.scope, f"since{n}": budget.since}
            if budget.platform is not None:
                where.append(f"platform = :platform{n}")
                params[f"platform{n}"] = budget.platform
            if budget.user_id is not None:
                where.append(f"user_id = :user{n}")
                params[f"user{n}"] = budget.user_id
            if budget.prefix is not None:
                # An index range (see `prefix_end`); substr() makes it exact and literal.
                where.append(f"conversation >= :prefix{n}")
                params[f"prefix{n}"] = budget.prefix
                end = prefix_end(budget.prefix)
                if end is not None:
                    where.append(f"conversation < :end{n}")
                    params[f"end{n}"] = end
                where.append(f"substr(conversation, 1, length(:prefix{n})) = :prefix{n}")
            matches = " AND ".join(where)
            source = self._spend_source(budget)
            parts.append(
                f"SELECT {n} AS n, "
                f"(SELECT coalesce(sum(cost_usd), 0) FROM usage INDEXED BY {source} "
                f"WHERE {matches}) AS used, "
                f"(SELECT coalesce(sum(amount), 0) FROM spend_holds "
                f"WHERE {matches} AND expires_at > :now) AS held, "
                f"(SELECT amount FROM spend_limits WHERE scope = :scope{n}) AS override"
            )
        rows = self._rows(" UNION ALL ".join(parts), params)
        totals: dict[str, tuple[float, float | None]] = {}
        for row in sorted(rows, key=lambda row: int(row["n"])):
            budget = budgets[row["n"]]
            spent = float(row["used"]) + float(row["held"])
            totals[budget.scope] = (spent, spend_limit(budget, row["override"]))
        return totals

    def _reserve(
        self, budgets: Sequence[Budget], want: float, least: float, hold: Hold
    ) -> tuple[float, int | None, dict[str, float]]:
        with self._immediate():
            now = time.time()
            self.db.execute("DELETE FROM spend_holds WHERE expires_at <= ?", [now])
            granted, lefts = spend_grant(self._spent(budgets, now), want, least)
            if granted is None:
                return 0.0, None, lefts
            cursor = self.db.execute(
                "INSERT INTO spend_holds(platform, user_id, conversation, amount, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                [hold.platform, hold.user_id, hold.conversation, granted, now, hold.expires_at],
            )
            assert cursor.lastrowid is not None
            return granted, cursor.lastrowid, lefts

    async def reserve(
        self, budgets: Sequence[Budget], want: float, least: float, hold: Hold
    ) -> tuple[float, int | None, dict[str, float]]:
        return await self._run(self._reserve, list(budgets), want, least, hold)

    def _release(self, hold_id: int) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM spend_holds WHERE id = ?", [hold_id])

    async def release(self, hold_id: int) -> None:
        await self._run(self._release, hold_id)

    async def spent(self, budgets: Sequence[Budget]) -> dict[str, tuple[float, float | None]]:
        return await self._run(self._spent, list(budgets), time.time())

    def _set_spend_limit(self, scope: str, amount: float | None) -> None:
        with self.db.atomic():
            if amount is None:
                self.db.execute("DELETE FROM spend_limits WHERE scope = ?", [scope])
            else:
                self.db.execute(
                    "INSERT INTO spend_limits(scope, amount, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(scope) DO UPDATE SET amount = excluded.amount, "
                    "updated_at = excluded.updated_at",
                    [scope, amount, time.time()],
                )

    async def set_spend_limit(self, scope: str, amount: float | None) -> None:
        await self._run(self._set_spend_limit, scope, amount)

    def _has_spend_limits(self) -> bool:
        return bool(self._rows("SELECT 1 FROM spend_limits LIMIT 1"))

    async def has_spend_limits(self) -> bool:
        return await self._run(self._has_spend_limits)

    def _add_audit(self, entry: AuditEntry) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO audit(created_at, platform, actor, action, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    entry.created_at if entry.created_at is not None else time.time(),
                    entry.platform,
                    entry.actor,
                    entry.action,
                    entry.detail,
                ],
            )

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._run(self._add_audit, entry)

    def _audit_entries(self, since: float) -> list[AuditEntry]:
        rows = self._rows(
            "SELECT created_at, platform, actor, action, detail FROM audit "
            "WHERE created_at >= ? ORDER BY created_at, id",
            [since],
        )
        return [
            AuditEntry(r["platform"], r["actor"], r["action"], r["detail"], r["created_at"])
            for r in rows
        ]

    async def audit_entries(self, *, since: float = 0.0) -> list[AuditEntry]:
        return await self._run(self._audit_entries, since)

    # What it keeps and forgets

    @staticmethod
    def _dm_conversations(platform: str | None) -> str:
        """SQL for the DM conversations (on `:platform`, unless None) `:user` wrote in."""
        sql = (
            "SELECT DISTINCT m.conversation FROM messages m "
            "JOIN conversations c ON c.key = m.conversation JOIN places p ON p.key = c.place "
            f"WHERE m.author_id = :user AND p.visibility = '{DM}'"
        )
        if platform is not None:
            sql += (
                " AND p.platform = :platform "
                "AND substr(m.conversation, 1, length(:prefix)) = :prefix"
            )
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

    def _forget_user(self, platform: str, user_id: str) -> int:
        params = self._user_params(platform, user_id)
        mine = "author_id = :user AND substr(conversation, 1, length(:prefix)) = :prefix"
        with self.db.atomic():
            dms = [
                row["conversation"] for row in self._rows(self._dm_conversations(platform), params)
            ]
            # Summaries may hold their words: those of every conversation they wrote in go.
            self.db.execute(
                "DELETE FROM conversation_settings WHERE name = :memory AND conversation IN "
                f"(SELECT DISTINCT conversation FROM messages WHERE {mine})",
                params,
            )
            deleted = 0
            for key in dms:  # the whole DM, the bot's answers too
                deleted += self.db.execute(
                    "DELETE FROM messages WHERE conversation = ?", [key]
                ).rowcount
                self.db.execute("UPDATE conversations SET window_start = 0 WHERE key = ?", [key])
            deleted += self.db.execute(f"DELETE FROM messages WHERE {mine}", params).rowcount
            self.db.execute(
                "UPDATE usage SET user_id = :forgotten "
                "WHERE platform = :platform AND user_id = :user",
                params,
            )
            self.db.execute(
                "DELETE FROM authors WHERE author_id = :user "
                "AND NOT EXISTS (SELECT 1 FROM messages WHERE author_id = :user)",
                params,
            )
            self.db.execute(
                "DELETE FROM feedback WHERE platform = :platform AND user_id = :user", params
            )
            self._drop_orphans()
        return deleted

    async def forget_user(self, platform: str, user_id: str) -> int:
        return await self._run(self._forget_user, platform, user_id)

    def _export_user(self, platform: str | None, user_id: str) -> dict[str, Any]:
        params = self._user_params(platform, user_id)
        dms = self._dm_conversations(platform)
        on_platform = "" if platform is None else " AND platform = :platform"
        in_prefix = (
            "" if platform is None else " AND substr(conversation, 1, length(:prefix)) = :prefix"
        )
        messages = self._rows(
            f"SELECT * FROM messages WHERE (author_id = :user{in_prefix}) "
            f"OR conversation IN ({dms}) ORDER BY id",
            params,
        )
        usage = self._rows(
            f"SELECT * FROM usage WHERE user_id = :user{on_platform} ORDER BY created_at, id",
            params,
        )
        settings = self._rows(
            "SELECT conversation, name, value FROM conversation_settings "
            f"WHERE conversation IN ({dms}) ORDER BY conversation, name",
            params,
        )
        audit = self._rows(
            "SELECT created_at, platform, actor, action, detail FROM audit "
            f"WHERE actor = :user{on_platform} ORDER BY created_at, id",
            params,
        )
        entries = [
            AuditEntry(r["platform"], r["actor"], r["action"], r["detail"], r["created_at"])
            for r in audit
        ]
        return user_export(platform, user_id, messages, usage, settings, entries)

    async def export_user(self, platform: str | None, user_id: str) -> dict[str, Any]:
        return await self._run(self._export_user, platform, user_id)

    def _purge_batch(self, before: float) -> int:
        """Delete up to PURGE_BATCH of the oldest messages created before `before`, and the
        running summaries of their conversations; how many messages went."""
        batch = "SELECT id FROM messages WHERE created_at < ? ORDER BY created_at, id LIMIT ?"
        with self.db.atomic():
            self.db.execute(
                "DELETE FROM conversation_settings WHERE name = ? AND conversation IN "
                f"(SELECT DISTINCT conversation FROM messages WHERE id IN ({batch}))",
                [MEMORY, before, PURGE_BATCH],
            )
            cursor = self.db.execute(
                f"DELETE FROM messages WHERE id IN ({batch})", [before, PURGE_BATCH]
            )
            return cursor.rowcount

    def _purge_extracts(self, before: float) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM extracts WHERE created_at < ?", [before])

    async def purge_older(self, before: float) -> int:
        # What was read out of files is message text too: it goes with them.
        await self._run(self._purge_extracts, before)
        total = 0
        while True:  # in batches, so other calls get the worker (and the lock) in between
            deleted = await self._run(self._purge_batch, before)
            total += deleted
            if deleted < PURGE_BATCH:
                await self._run(self._drop_orphans)
                return total

    # Places, search and reads within a scope

    def _note_place(self, conversation: str, place: PlaceInfo) -> None:
        now = time.time()
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO places(key, platform, space, name, visibility, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "name = excluded.name, visibility = excluded.visibility, "
                "updated_at = excluded.updated_at",
                place_values(place, now),
            )
            self._ensure_conversation(conversation, now)
            self.db.execute(
                "UPDATE conversations SET place = ? WHERE key = ?", [place.key, conversation]
            )

    async def note_place(self, conversation: str, place: PlaceInfo) -> None:
        await self._run(self._note_place, conversation, place)

    @staticmethod
    def _readable(scope: Scope, column: str) -> tuple[str, dict[str, Any]]:
        """SQL that is true when the place key in `column` is readable under `scope`.

        Its own place, or a place on record as public in one of the scope's spaces on its
        platform. A NULL place (never noted) matches neither.
        """
        spaces = readable_spaces(scope)
        params: dict[str, Any] = {f"space{n}": space for n, space in enumerate(spaces)}
        params |= {"own_place": scope.place or None, "platform": scope.platform}
        marks = ", ".join(f":space{n}" for n in range(len(spaces)))
        sql = (
            f"({column} = :own_place OR {column} IN (SELECT key FROM places "
            f"WHERE visibility = 'public' AND platform = :platform AND space IN ({marks})))"
        )
        return sql, params

    def _places(self, scope: Scope) -> list[PlaceInfo]:
        readable, params = self._readable(scope, "key")
        rows = self._rows(
            f"SELECT key, name, visibility FROM places WHERE {readable} ORDER BY name, key",
            params,
        )
        return [PlaceInfo(r["key"], r["name"] or "", r["visibility"]) for r in rows]

    async def places(self, scope: Scope) -> list[PlaceInfo]:
        return await self._run(self._places, scope)

    def _search(self, scope: Scope, query: SearchQuery, now: float) -> list[Hit]:
        """Every term first, then any term to fill up to the limit.

        Each pass walks the FTS5 matches newest first (FTS5 keeps them in id order, and
        stops at the LIMIT), checking each against the scope and filters, and ranks the
        first CANDIDATES. Filters too narrow to meet often while walking are turned into
        a set of ids (`_narrow`) or a starting id (`_bound_after`) first.
        """
        terms = search_terms(query.text)
        if not terms:
            return []
        where = self._search_filter(scope, query)
        if where is None:
            return []
        quoted = [f'"{term}"' for term in terms]  # a phrase each: never FTS5 syntax
        wanted = hits_wanted(query)
        hits = self._search_pass(where, " ".join(quoted), 1.0, wanted, [], now)
        if len(hits) < wanted and len(terms) > 1:  # fill up with messages having any term
            found = [hit.message.id for hit in hits]
            hits += self._search_pass(
                where, " OR ".join(quoted), 0.0, wanted - len(hits), found, now
            )
        return hits

    async def search(self, scope: Scope, query: SearchQuery) -> list[Hit]:
        return await self._run(self._search, scope, query, time.time())

    def _search_filter(self, scope: Scope, query: SearchQuery) -> _Where | None:
        """The conditions a hit meets (on `m`), or None when nothing can meet them."""
        readable, params = self._readable(scope, "key")
        rows = self._rows(f"SELECT key FROM places WHERE {readable}", params)
        places = searched_places(scope, query, (row["key"] for row in rows))
        if not places:
            return None
        where = _Where([SEARCHABLE_ROW.format("m.")], {})
        where.add(f"m.place IN ({where.marks('place', places)})")
        author_ids = ""
        if query.author:
            # The authors' ids first: a set lookup per match is cheaper than folding the
            # name of every match, and it is what finds their messages through the index.
            authors = (
                "SELECT author_id FROM authors "
                "WHERE author_id = :author OR instr(teambot_fold(author_name), :folded) > 0"
            )
            where.add(
                f"m.author_id IN ({authors}) AND (m.author_id = :author "
                "OR instr(teambot_fold(m.author_name), :folded) > 0)",
                author=query.author,
                folded=_fold(query.author),
            )
            author_ids = f"SELECT id FROM messages WHERE author_id IN ({authors})"
        if query.before is not None:
            where.add("m.created_at < :before", before=query.before)
        if query.after is not None:
            where.add("m.created_at > :after", after=query.after)
            if not self._bound_after(where):
                return None
        place_ids = f"SELECT id FROM messages WHERE place IN ({where.marks('place', places)})"
        return self._narrow(where, [place_ids, author_ids])

    def _bound_after(self, where: _Where) -> bool:
        """Start the walk through the matches at the first message after `:after`, when
        fewer than RECENT are (an index range, ~1 ms per 40k); False when none are.

        Matches are walked newest first, and without a bound an `after` filter would
        walk on through every older match once fewer than CANDIDATES are found. The
        smallest id among the messages after it is a safe bound, whatever order the
        messages' times are in.
        """
        row = self._rows(
            "SELECT count(*) AS n, min(id) AS first FROM (SELECT id FROM messages "
            f"WHERE created_at > :after LIMIT {RECENT})",
            where.params,
        )[0]
        if row["n"] == 0:
            return False
        if row["n"] < RECENT:
            where.add("messages_fts.rowid >= :first_id", first_id=row["first"])
        return True

    def _narrow(self, where: _Where, id_queries: list[str]) -> _Where | None:
        """`where`, limited to the ids of the most selective of `id_queries` if it is narrow.

        FTS5 cannot filter by place or author itself: a common word under a narrow filter
        (someone's messages, a quiet channel, a DM) would walk every match of the word
        and look each up. Fewer than NARROW ids are collected first instead (an index
        range each, cheap), and the matches are checked against that set in memory.
        None when one of them holds no rows at all.
        """
        best: tuple[int, str] | None = None
        for ids in filter(None, id_queries):
            counted = self._rows(f"SELECT count(*) AS n FROM ({ids} LIMIT {NARROW})", where.params)
            count = int(counted[0]["n"])
            if count == 0:
                return None
            if count < NARROW and (best is None or count < best[0]):
                best = (count, ids)
        if best is not None:
            # `+` keeps the set a filter, not a list of FTS5 lookups (one per id, slower).
            where.add(f"+messages_fts.rowid IN ({best[1]})")
        return where

    def _search_pass(
        self, where: _Where, match: str, tier: float, wanted: int, exclude: list[int], now: float
    ) -> list[Hit]:
        """One FTS5 query: the best `wanted` of the newest CANDIDATES matches in `where`.

        Ranked by the score in bot/store/search.py; relevance is -bm25 (FTS5's bm25 is
        lower-is-better). `tier` is 1 for the all-terms pass, 0 for the any-term fill-up.
        """
        conditions = " AND ".join(where.conditions)
        if exclude:
            conditions += f" AND m.id NOT IN ({', '.join(str(int(i)) for i in exclude)})"
        params = where.params | {"match": match, "tier": tier, "now": now, "wanted": wanted}
        params |= {"candidates": CANDIDATES, "recency": RECENCY_SECONDS}
        rows = self._rows(
            f"""
            WITH candidates AS (
                SELECT m.id, m.created_at, -bm25(messages_fts) AS relevance
                FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
                WHERE messages_fts MATCH :match AND {conditions}
                ORDER BY messages_fts.rowid DESC LIMIT :candidates
            ), ranked AS (
                SELECT id, :tier + relevance / max(max(relevance) OVER (), 1e-9)
                    / (1.0 + max(:now - created_at, 0.0) / :recency) AS score
                FROM candidates ORDER BY score DESC, id DESC LIMIT :wanted
            )
            SELECT m.*, r.score, m.place AS place_key, p.name AS place_name,
                p.visibility AS place_visibility,
                (SELECT snippet(messages_fts, 0, '**', '**', '…', 24) FROM messages_fts
                 WHERE messages_fts MATCH :match AND messages_fts.rowid = m.id) AS snippet
            FROM ranked r
            JOIN messages m ON m.id = r.id
            LEFT JOIN places p ON p.key = m.place
            ORDER BY r.score DESC, m.id DESC
            """,
            params,
        )
        return [hit_from_row(row) for row in rows]

    def _locate(self, scope: Scope, prefix: str, platform_id: str) -> StoredMessage | None:
        readable, params = self._readable(scope, "m.place")
        rows = self._rows(
            f"SELECT m.* FROM messages m WHERE m.platform_id = :platform_id "
            f"AND substr(m.conversation, 1, length(:prefix)) = :prefix AND {readable} "
            f"ORDER BY m.copied, m.id LIMIT 1",
            params | {"platform_id": platform_id, "prefix": prefix},
        )
        return StoredMessage.from_row(rows[0]) if rows else None

    async def locate(self, scope: Scope, prefix: str, platform_id: str) -> StoredMessage | None:
        return await self._run(self._locate, scope, prefix, platform_id)

    def _may_read(self, scope: Scope, conversation: str) -> bool:
        readable, params = self._readable(scope, "place")
        return bool(
            self._rows(
                f"SELECT 1 FROM conversations WHERE key = :conversation AND {readable}",
                params | {"conversation": conversation},
            )
        )

    def _around(
        self,
        scope: Scope,
        conversation: str,
        message_id: int | None,
        at: float | None,
        before: int,
        after: int,
    ) -> list[StoredMessage]:
        if not self._may_read(scope, conversation):
            return []
        before, after = clamp_context(before), clamp_context(after)
        if message_id is not None:
            pivot = self._rows(
                f"SELECT {POSITION} AS position, id FROM messages "
                f"WHERE conversation = ? AND id = ?",
                [conversation, message_id],
            )
        elif at is not None:
            pivot = self._rows(
                f"SELECT {POSITION} AS position, id FROM messages "
                f"WHERE conversation = ? AND created_at >= ? ORDER BY created_at, id LIMIT 1",
                [conversation, at],
            )
            if not pivot:  # after the last message: the newest ones
                return self._recent(conversation, before)
        else:
            return self._recent(conversation, before)
        if not pivot:
            return []
        at_position = [conversation, pivot[0]["position"], pivot[0]["id"]]
        earlier = self._rows(
            f"SELECT * FROM messages WHERE conversation = ? AND ({POSITION}, id) < (?, ?) "
            f"ORDER BY {POSITION} DESC, id DESC LIMIT ?",
            [*at_position, before],
        )
        later = self._rows(
            f"SELECT * FROM messages WHERE conversation = ? AND ({POSITION}, id) >= (?, ?) "
            f"ORDER BY {POSITION}, id LIMIT ?",
            [*at_position, after + 1],
        )
        return [StoredMessage.from_row(row) for row in [*reversed(earlier), *later]]

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
        return await self._run(self._around, scope, conversation, message_id, time, before, after)

    def _span(
        self, scope: Scope, prefix: str, since: float, until: float, limit: int
    ) -> list[StoredMessage]:
        """The newest `limit` readable originals created in [since, until) under `prefix`.

        The conversations under the prefix are an index range of their keys (see
        `prefix_end`; the substr() test is what makes it exact and literal). Each
        one's messages in the time range are then an index range too, so a channel and
        its threads cost a few lookups plus the rows found, however long their history.
        When the time range holds fewer messages than that costs in lookups (a short
        span under a wide prefix: a whole workspace over an hour), it is walked through
        the created_at index instead, newest first, up to the limit.
        """
        if since >= until:
            return []
        readable, params = self._readable(scope, "m.place")
        keys = "c.key >= :prefix AND substr(c.key, 1, length(:prefix)) = :prefix"
        end = prefix_end(prefix)
        if end is not None:
            keys += " AND c.key < :end"
        params |= {"prefix": prefix, "end": end, "since": since, "until": until}
        counted = self._rows(
            f"SELECT count(*) AS n FROM (SELECT 1 FROM conversations c WHERE {keys} "
            f"LIMIT {SPAN_CONVERSATIONS})",
            params,
        )[0]["n"]
        if counted == 0:
            return []
        probes = counted * SPAN_PROBE
        walked = self._rows(
            "SELECT count(*) AS n FROM (SELECT 1 FROM messages "
            "WHERE created_at >= :since AND created_at < :until LIMIT :probes)",
            params | {"probes": probes},
        )[0]["n"]
        if walked < probes:
            source = (
                "messages m INDEXED BY idx_messages_created "
                f"WHERE m.conversation IN (SELECT c.key FROM conversations c WHERE {keys})"
            )
        else:  # CROSS JOIN: conversations first, then each one's messages
            source = (
                "conversations c CROSS JOIN messages m INDEXED BY idx_messages_time "
                f"WHERE {keys} AND m.conversation = c.key"
            )
        rows = self._rows(
            f"SELECT m.* FROM {source} AND m.created_at >= :since AND m.created_at < :until "
            f"AND m.copied = 0 AND {readable} ORDER BY m.created_at DESC, m.id DESC LIMIT :limit",
            params | {"limit": clamp_span(limit)},
        )
        return [StoredMessage.from_row(row) for row in reversed(rows)]

    async def span(
        self, scope: Scope, prefix: str, since: float, until: float, limit: int = 10_000
    ) -> list[StoredMessage]:
        return await self._run(self._span, scope, prefix, since, until, limit)

    # Stop, Regenerate and feedback

    def _drop_orphans(self) -> None:
        """Within a transaction: versions and notes of questions that are gone."""
        for statement in DROP_ORPHANS:
            self.db.execute(statement)

    def _answer_of(self, conversation: str, question: int) -> StoredMessage | None:
        rows = self._rows(
            f"SELECT * FROM messages WHERE conversation = ? AND {POSITION} = ? "
            "AND reply_to = ? AND role = 'assistant' ORDER BY id DESC LIMIT 1",
            [conversation, question, question],
        )
        return StoredMessage.from_row(rows[0]) if rows else None

    def _asked(self, question: int) -> Asked | None:
        rows = self._rows("SELECT * FROM messages WHERE id = ? AND role = 'user'", [question])
        if not rows:
            return None
        row = StoredMessage.from_row(rows[0])
        where = self._rows(
            "SELECT c.window_start, p.key, p.name, p.visibility FROM conversations c "
            "LEFT JOIN places p ON p.key = c.place WHERE c.key = ?",
            [row.conversation],
        )
        place = None
        if where and where[0]["key"] is not None:
            place = PlaceInfo(where[0]["key"], where[0]["name"] or "", where[0]["visibility"])
        notes = self._rows(
            "SELECT reasoning, stopped_by FROM reply_notes WHERE question = ?", [question]
        )
        reasoning = notes[0]["reasoning"] if notes else None
        return Asked(
            row,
            self._answer_of(row.conversation, question),
            place,
            None if reasoning is None else bool(reasoning),
            int(where[0]["window_start"] or 0) if where else 0,
            stopped_by=notes[0]["stopped_by"] if notes else None,
        )

    async def asked(self, question: int) -> Asked | None:
        return await self._run(self._asked, question)

    def _note_reply(
        self, question: int, conversation: str, reasoning: bool | None, stopped_by: str | None
    ) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO reply_notes(question, conversation, reasoning, stopped_by, "
                "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(question) DO UPDATE SET "
                "reasoning = coalesce(excluded.reasoning, reasoning), "
                "stopped_by = coalesce(excluded.stopped_by, stopped_by), "
                "updated_at = excluded.updated_at",
                [
                    question,
                    conversation,
                    None if reasoning is None else int(reasoning),
                    stopped_by,
                    time.time(),
                ],
            )

    async def note_reply(
        self,
        question: int,
        conversation: str,
        *,
        reasoning: bool | None = None,
        stopped_by: str | None = None,
    ) -> None:
        await self._run(self._note_reply, question, conversation, reasoning, stopped_by)

    def _replace_answer(self, question: int, answer: NewMessage) -> int:
        now = answer.created_at or time.time()
        columns = ", ".join(VERSION_COLUMNS)
        with self.db.atomic():
            row_id = self._insert(answer, now)
            assert row_id is not None, "an answer has no platform id to clash"
            old = (
                f"FROM messages WHERE conversation = ? AND {POSITION} = ? AND reply_to = ? "
                "AND role = 'assistant' AND id <> ?"
            )
            params = [answer.conversation, question, question, row_id]
            self.db.execute(
                f"INSERT OR REPLACE INTO message_versions({columns}, replaced_by, replaced_at) "
                f"SELECT {columns}, ?, ? {old}",
                [row_id, now, *params],
            )
            self.db.execute(f"DELETE {old}", params)
        return row_id

    async def replace_answer(self, question: int, answer: NewMessage) -> int:
        return await self._run(self._replace_answer, question, answer)

    def _answer_versions(self, question: int) -> list[StoredMessage]:
        rows = self._rows(
            "SELECT * FROM message_versions WHERE reply_to = ? ORDER BY id", [question]
        )
        return [StoredMessage.from_row(row) for row in rows]

    async def answer_versions(self, question: int) -> list[StoredMessage]:
        return await self._run(self._answer_versions, question)

    def _answer_posted(self, answer: int, platform_id: str) -> bool:
        with self.db.atomic():
            cursor = self.db.execute(
                "UPDATE OR IGNORE messages SET platform_id = ? WHERE id = ? AND role = 'assistant'",
                [platform_id, answer],
            )
            return cursor.rowcount > 0

    async def answer_posted(self, answer: int, platform_id: str) -> bool:
        return await self._run(self._answer_posted, answer, platform_id)

    def _vote(self, vote: Vote) -> int | None:
        with self.db.atomic():
            before = self._rows(
                "SELECT value FROM feedback WHERE answer = ? AND platform = ? AND user_id = ?",
                [vote.answer, vote.platform, vote.user_id],
            )
            self.db.execute(
                "INSERT OR REPLACE INTO feedback(answer, question, conversation, platform, "
                "user_id, value, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        return int(before[0]["value"]) if before else None

    async def vote(self, vote: Vote) -> int | None:
        return await self._run(self._vote, vote)

    def _feedback_report(self, since: float, worst: int) -> FeedbackReport:
        days = self._rows(
            "SELECT date(created_at, 'unixepoch') AS day, sum(value > 0) AS up, "
            "sum(value < 0) AS down FROM feedback WHERE created_at >= ? GROUP BY day ORDER BY day",
            [since],
        )
        rated = self._rows(
            "SELECT f.answer, max(f.conversation) AS conversation, sum(f.value > 0) AS up, "
            "sum(f.value < 0) AS down, coalesce(max(m.platform_id), max(v.platform_id)) "
            "AS platform_id, coalesce(max(m.text), max(v.text), '') AS text "
            "FROM feedback f LEFT JOIN messages m ON m.id = f.answer "
            "LEFT JOIN message_versions v ON v.id = f.answer WHERE f.created_at >= ? "
            "GROUP BY f.answer HAVING sum(f.value < 0) > 0 "
            "ORDER BY sum(f.value) ASC, sum(f.value < 0) DESC, f.answer DESC LIMIT ?",
            [since, worst],
        )
        return FeedbackReport(
            [(r["day"], int(r["up"]), int(r["down"])) for r in days],
            [
                RatedAnswer(
                    r["answer"],
                    r["conversation"],
                    r["platform_id"],
                    int(r["up"]),
                    int(r["down"]),
                    r["text"],
                )
                for r in rated
            ],
        )

    async def feedback_report(self, *, since: float, worst: int = 10) -> FeedbackReport:
        return await self._run(self._feedback_report, since, worst)

    async def enter_turn(self, conversation: str, question: int) -> None:
        """One process per SQLite file: its `LocalCluster` queues turns in memory."""
        return None

    # Replies in progress

    def _reply_started(self, question: int, conversation: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO replies_in_progress VALUES (?, ?, ?, '[]', '[]', ?)",
            [question, conversation, self.cluster.owner, time.time()],
        )

    def _reply_progress(self, question: int, refs: Sequence[str], shown: Sequence[str]) -> None:
        with self.db.atomic():
            self.db.execute(
                "UPDATE replies_in_progress SET refs = ?, shown = ? WHERE question = ?",
                [json.dumps(list(refs)), json.dumps(list(shown)), question],
            )

    async def reply_progress(
        self, question: int, refs: Sequence[str], shown: Sequence[str]
    ) -> None:
        await self._run(self._reply_progress, question, refs, shown)

    def _reply_ended(self, question: int) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM replies_in_progress WHERE question = ?", [question])

    async def reply_ended(self, question: int) -> None:
        await self._run(self._reply_ended, question)

    def _take_orphaned_replies(self, platform: str) -> list[Orphan]:
        # One process per SQLite file: every row another process left is an orphan.
        mine, span = self.cluster.owner, [f"{platform}:", f"{platform};"]
        with self.db.atomic():
            rows = self._rows(
                "SELECT r.*, EXISTS (SELECT 1 FROM messages m WHERE m.reply_to = r.question "
                "AND m.role = 'assistant') AS answered FROM replies_in_progress r "
                "WHERE r.owner != ? AND r.conversation >= ? AND r.conversation < ?",
                [mine, *span],
            )
            self.db.execute(
                "DELETE FROM replies_in_progress WHERE owner != ? AND conversation >= ? "
                "AND conversation < ?",
                [mine, *span],
            )
        return [orphan_from_row(row) for row in rows]

    async def take_orphaned_replies(self, platform: str) -> list[Orphan]:
        return await self._run(self._take_orphaned_replies, platform)

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._worker.run(db.close)
        self._worker.close()


class _Where(Where):
    """`Where`, with SQLite's named placeholders for lists of values."""

    def marks(self, name: str, values: Sequence[Any]) -> str:
        """Named placeholders for `values` (as `:name0, :name1, ...`), bound here."""
        self.params |= {f"{name}{n}": value for n, value in enumerate(values)}
        return ", ".join(f":{name}{n}" for n in range(len(values)))


def _fold(text: str | None) -> str:
    return (text or "").casefold()
