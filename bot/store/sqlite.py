"""The SQLite backend: sqlite-utils on a WAL database, driven from one worker thread.

sqlite3 connections are synchronous, so every call runs on a single dedicated thread
that owns the connection (`SerialWorker`); the event loop only awaits the result. One
writer thread also serialises writes, which is what SQLite wants anyway.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.store import INSERT_COLUMNS, NewMessage, StoredMessage, UsageRecord, UsageRow, UsageTotals
from bot.store.worker import SerialWorker

T = TypeVar("T")
EVENT_TTL_SECONDS = 7 * 24 * 3600  # Slack retries for minutes; replays after reconnects are rarer

POSITION = "coalesce(reply_to, id)"
INSERT_MESSAGE = "INSERT OR IGNORE INTO messages({}) VALUES ({})".format(
    ", ".join(INSERT_COLUMNS), ", ".join(["?"] * len(INSERT_COLUMNS))
)

migrations = Migrations("teambot")


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


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._worker = SerialWorker("teambot-sqlite")
        self._db: Database | None = None

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        store = cls(path)
        await store._run(store._open)
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
        migrations.apply(db)
        self._db = db

    @property
    def db(self) -> Database:
        assert self._db is not None, "store is closed"
        return self._db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
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
        cursor = self.db.execute(INSERT_MESSAGE, message.values(now))
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
                return self._find(message.conversation, message.platform_id)
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

    # Usage

    def _record_usage(self, record: UsageRecord) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO usage(created_at, platform, conversation, user_id, model, "
                "prompt_tokens, completion_tokens, cost_usd, latency_ms, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                ],
            )

    async def record_usage(self, record: UsageRecord) -> None:
        await self._run(self._record_usage, record)

    def _usage_totals(
        self, since: float | None, user_id: str | None, conversation: str | None
    ) -> UsageTotals:
        where: list[str] = ["created_at >= ?"]
        params: list[Any] = [since or 0.0]
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if conversation is not None:
            where.append("conversation = ?")
            params.append(conversation)
        row = self._rows(
            "SELECT count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS p, "
            "coalesce(sum(completion_tokens), 0) AS c, coalesce(sum(cost_usd), 0) AS cost "
            f"FROM usage WHERE {' AND '.join(where)}",
            params,
        )[0]
        return UsageTotals(row["calls"], row["p"], row["c"], row["cost"])

    async def usage_totals(
        self,
        *,
        since: float | None = None,
        user_id: str | None = None,
        conversation: str | None = None,
    ) -> UsageTotals:
        return await self._run(self._usage_totals, since, user_id, conversation)

    def _usage_rows(self, since: float | None) -> list[UsageRow]:
        rows = self._rows(
            "SELECT date(created_at, 'unixepoch') AS day, platform, user_id, count(*) AS calls, "
            "sum(prompt_tokens) AS p, sum(completion_tokens) AS c, sum(cost_usd) AS cost "
            "FROM usage WHERE created_at >= ? GROUP BY day, platform, user_id "
            "ORDER BY day, platform, user_id",
            [since or 0.0],
        )
        return [
            UsageRow(
                r["day"],
                r["platform"],
                r["user_id"],
                UsageTotals(r["calls"], r["p"], r["c"], r["cost"]),
            )
            for r in rows
        ]

    async def usage_rows(self, *, since: float | None = None) -> Sequence[UsageRow]:
        return await self._run(self._usage_rows, since)

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._worker.run(db.close)
        self._worker.close()
