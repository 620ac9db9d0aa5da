"""`teambot migrate --to postgresql://…`: copy the SQLite database into PostgreSQL.

Both stores are opened first, so each has its current schema. Then every table both
databases have is copied with the columns both have (read from the schemas at run time,
so columns and tables added later come along), in batches of one transaction each:

- messages, usage and audit are copied by id, after the last id an earlier run copied
  (noted in PostgreSQL's `meta` in the batch's transaction): an interrupted run resumes
  where it stopped, and a finished one skips everything at the cost of one query;
- rows that change in place (conversations, settings, places, limits, meta) are upserted
  by primary key, so the later SQLite state wins;
- any other table is copied by primary key, keeping rows PostgreSQL already has.

Ids are kept (replies, window starts and holds refer to them), and sequences are moved
past them afterwards so rows PostgreSQL adds later never collide.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError

if TYPE_CHECKING:  # psycopg is the postgres extra: imported when used, after `prepare`
    from psycopg import AsyncConnection, sql

BATCH = 5_000
# Copied after the last id copied: rows of these keep their id and are only appended.
BY_ID = ("messages", "usage", "audit")
# Rows that change in place; a later SQLite state overwrites what an earlier run copied.
UPSERT = ("conversations", "conversation_settings", "places", "meta", "spend_limits")
# Not copied: derived from messages by triggers on both sides (`authors`; SQLite's FTS
# tables and PostgreSQL's generated tsvector have no counterpart), the SQLite process's
# in-flight spending holds, and each backend's own migration bookkeeping.
SKIP = ("authors", "spend_holds", "_migrations", "teambot_migrations", "sqlite_sequence")
# Known tables go first, in this order (a message's conversation before the message);
# unknown ones follow by name.
ORDER = (
    "places",
    "conversations",
    "messages",
    "conversation_settings",
    "usage",
    "spend_limits",
    "audit",
    "processed_events",
    "meta",
)
PROGRESS = "migrate:{}:last_id"  # meta row: the last id of a BY_ID table copied


class MigrateError(Exception):
    """Why the copy cannot go on; one line, never a password."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]  # in both databases, not generated
    key: tuple[str, ...]  # PostgreSQL's primary key
    types: dict[str, str]  # PostgreSQL's data_type per column
    mode: str  # "id", "upsert" or "keep"


@dataclass
class Count:
    table: str
    copied: int = 0
    present: int = 0
    updated: int = 0

    def line(self) -> str:
        text = f"{self.table}: {self.copied} copied, {self.present} already there"
        return text + (f", {self.updated} updated" if self.updated else "")


AfterBatch = Callable[[str, int], None]


def source_path(database_url: str) -> str:
    """The SQLite file DATABASE_URL names; ConfigError unless it is one that exists."""
    if not database_url.startswith("sqlite:///"):
        scheme = database_url.split("://", 1)[0] or database_url
        raise ConfigError(
            "DATABASE_URL", f"migrate copies from a sqlite:/// database (this one is {scheme})"
        )
    path = database_url.removeprefix("sqlite:///")
    if not Path(path).is_file():
        raise ConfigError("DATABASE_URL", f"no SQLite database at {path}")
    return path


def check_target(url: str) -> None:
    if not url.startswith(("postgresql://", "postgres://")):
        scheme = url.split("://", 1)[0] if "://" in url else url[:20]
        raise ConfigError("--to", f"a postgresql:// URL (got {scheme!r})")


async def main(database_url: str, target_url: str) -> int:
    """The CLI command: copy, print a line per table and a total; the exit code."""
    try:
        path = source_path(database_url)
        check_target(target_url)
        await prepare(database_url, target_url)
        counts = await migrate(path, target_url, report=lambda count: print(count.line()))
    except ConfigError as exc:
        print(f"teambot: configuration error: {exc}", file=sys.stderr)
        return 2
    except MigrateError as exc:
        print(f"teambot: migrate: {exc}", file=sys.stderr)
        return 1
    total = Count(
        "total",
        sum(c.copied for c in counts),
        sum(c.present for c in counts),
        sum(c.updated for c in counts),
    )
    print(total.line())
    return 0


async def prepare(database_url: str, target_url: str) -> None:
    """Open (and so migrate) both stores, so each holds the current schema."""
    from bot.store import open_store

    source = await open_store(database_url)
    await source.aclose()
    try:
        target = await open_store(target_url)
    except ConfigError as exc:  # it names DATABASE_URL, which is the source here
        raise ConfigError("--to", exc.accepts) from None
    await target.aclose()


async def migrate(
    path: str,
    target_url: str,
    *,
    batch: int = BATCH,
    report: Callable[[Count], None] = lambda count: None,
    after_batch: AfterBatch | None = None,
) -> list[Count]:
    """Copy the SQLite database at `path` into `target_url`; the counts per table.

    `after_batch(table, rows)` runs after each committed batch (tests interrupt there).
    """
    import psycopg

    # Reads block the loop between batches; nothing else runs in this command.
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    # Text that is not UTF-8 still copies, with replacement characters.
    source.text_factory = lambda raw: raw.decode("utf-8", "replace")
    try:
        # Autocommit: each batch is its own explicit transaction, and the staging
        # tables (ON COMMIT DELETE ROWS) are emptied by each commit.
        async with await psycopg.AsyncConnection.connect(target_url, autocommit=True) as target:
            copier = Copier(source, target, batch, after_batch)
            counts = []
            for table in await copier.plan():
                count = await copier.copy(table)
                report(count)
                counts.append(count)
            return counts
    except psycopg.Error as exc:
        raise MigrateError(" ".join(str(exc).split()) or type(exc).__name__) from None
    finally:
        source.close()


class Copier:
    def __init__(
        self,
        source: sqlite3.Connection,
        target: AsyncConnection[Any],
        batch: int,
        after_batch: AfterBatch | None,
    ) -> None:
        self.source = source
        self.target = target
        self.batch = batch
        self.after_batch = after_batch

    async def _rows(
        self, query: str | sql.Composed, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        cursor = await self.target.execute(query, params)
        return list(await cursor.fetchall())

    # Schemas

    async def plan(self) -> list[Table]:
        """The tables both databases have, with what to copy of each and how."""
        mine = {
            row[0]
            for row in self.source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        theirs = {
            row[0]
            for row in await self._rows(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
        }
        common = (mine & theirs) - set(SKIP)
        names = [t for t in ORDER if t in common] + sorted(common - set(ORDER))
        tables = [await self._table(name) for name in names]
        return [table for table in tables if table is not None]

    async def _table(self, name: str) -> Table | None:
        # table_xinfo also lists generated columns (hidden 2 or 3), which are not copied.
        mine = {
            row[1]
            for row in self.source.execute(f"PRAGMA table_xinfo({_quoted([name])})")
            if not row[6]
        }
        theirs = await self._rows(
            "SELECT column_name, data_type, is_generated FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            [name],
        )
        types = {col: kind for col, kind, generated in theirs if generated != "ALWAYS"}
        columns = tuple(col for col in types if col in mine)
        key = tuple(
            row[0]
            for row in await self._rows(
                "SELECT k.column_name FROM information_schema.table_constraints c "
                "JOIN information_schema.key_column_usage k ON k.constraint_schema = "
                "c.constraint_schema AND k.constraint_name = c.constraint_name "
                "AND k.table_name = c.table_name WHERE c.table_schema = current_schema() "
                "AND c.table_name = %s AND c.constraint_type = 'PRIMARY KEY' "
                "ORDER BY k.ordinal_position",
                [name],
            )
        )
        if not key or not set(key) <= set(columns):
            print(f"teambot: migrate: {name} skipped, no primary key in both", file=sys.stderr)
            return None
        by_id = name in BY_ID and key == ("id",)
        mode = "upsert" if name in UPSERT else "id" if by_id else "keep"
        return Table(name, columns, key, {c: types[c] for c in columns}, mode)

    # Copying

    async def copy(self, table: Table) -> Count:
        await self._stage(table)
        if table.mode == "id":
            count = await self._copy_by_id(table)
        else:
            count = await self._copy_by_key(table)
        await self._fix_sequences(table)
        return count

    async def _stage(self, table: Table) -> None:
        """A temporary table of the copied columns' types, emptied at each commit."""
        from psycopg import sql

        await self.target.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS "
                "SELECT {} FROM {} WITH NO DATA"
            ).format(_staging(table), _names(table.columns), sql.Identifier(table.name))
        )

    async def _copy_by_id(self, table: Table) -> Count:
        count = Count(table.name)
        last = await self._resume_point(table)
        (count.present,) = self.source.execute(
            f"SELECT count(*) FROM {_quoted([table.name])} WHERE id <= ?", [last]
        ).fetchone()
        select = f"{_select(table)} WHERE id > ? ORDER BY id LIMIT ?"
        at = table.columns.index("id")
        while rows := self.source.execute(select, [last, self.batch]).fetchall():
            last = rows[-1][at]
            inserted, updated = await self._write(table, rows, progress=last)
            count.copied += inserted
            count.present += len(rows) - inserted - updated
            if self.after_batch:
                self.after_batch(table.name, len(rows))
        return count

    async def _copy_by_key(self, table: Table) -> Count:
        count = Count(table.name)
        order = _quoted(table.key)
        first = f"{_select(table)} ORDER BY {order} LIMIT ?"
        after = (
            f"{_select(table)} "
            f"WHERE ({order}) > ({', '.join('?' * len(table.key))}) ORDER BY {order} LIMIT ?"
        )
        at = [table.columns.index(column) for column in table.key]
        rows = self.source.execute(first, [self.batch]).fetchall()
        while rows:
            inserted, updated = await self._write(table, rows)
            count.copied += inserted
            count.updated += updated
            count.present += len(rows) - inserted - updated
            if self.after_batch:
                self.after_batch(table.name, len(rows))
            last = [rows[-1][i] for i in at]
            rows = self.source.execute(after, [*last, self.batch]).fetchall()
        return count

    async def _write(
        self, table: Table, rows: list[tuple[Any, ...]], progress: int | None = None
    ) -> tuple[int, int]:
        """One transaction: rows in (and the progress noted); how many new, how many changed."""
        from psycopg import sql

        convert = [_converter(table.types[column]) for column in table.columns]
        columns = _names(table.columns)
        async with self.target.transaction():
            async with self.target.cursor().copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(_staging(table), columns)
            ) as copy:
                for row in rows:
                    await copy.write_row(
                        [fn(value) for fn, value in zip(convert, row, strict=True)]
                    )
            cursor = await self.target.execute(_insert(table))
            inserted, updated = await cursor.fetchone() or (0, 0)
            if progress is not None:
                await self.target.execute(
                    "INSERT INTO meta (name, value) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    [PROGRESS.format(table.name), str(progress)],
                )
        return int(inserted), int(updated)

    async def _resume_point(self, table: Table) -> int:
        """The last id an earlier run copied (0: none), after checking it is safe to go on."""
        from psycopg import sql

        rows = await self._rows(
            "SELECT value FROM meta WHERE name = %s", [PROGRESS.format(table.name)]
        )
        last = int(rows[0][0]) if rows else 0
        newer = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} WHERE id > %s LIMIT 1) x")
        ((theirs,),) = await self._rows(newer.format(sql.Identifier(table.name)), [last])
        if not theirs:
            return last
        if not rows:
            raise MigrateError(
                f"PostgreSQL's {table.name} table already holds rows that teambot migrate "
                "did not copy; migrate into a new, empty database"
            )
        (mine,) = self.source.execute(
            f"SELECT count(*) FROM {_quoted([table.name])} WHERE id > ?", [last]
        ).fetchone()
        if mine:
            raise MigrateError(
                f"{table.name}: both databases have new rows since the last migrate "
                f"(after id {last}); their ids would collide"
            )
        return last

    async def _fix_sequences(self, table: Table) -> None:
        """Move each column's sequence past the ids copied into it (never backwards)."""
        from psycopg import sql

        name = sql.Identifier(table.name).as_string(self.target)
        for column in table.key:
            ((sequence,),) = await self._rows(
                "SELECT pg_get_serial_sequence(%s, %s)", [name, column]
            )
            if sequence is None:
                continue
            query = sql.SQL(
                "SELECT setval(%s::regclass, m) FROM (SELECT max({}) AS m FROM {}) x "
                "WHERE m > coalesce(pg_sequence_last_value(%s::regclass), 0)"
            ).format(sql.Identifier(column), sql.Identifier(table.name))
            await self.target.execute(query, [sequence, sequence])


def _staging(table: Table) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(f"teambot_migrate_{table.name}")


def _names(columns: Sequence[str]) -> sql.Composed:
    from psycopg import sql

    return sql.SQL(", ").join(sql.Identifier(column) for column in columns)


def _quoted(columns: Sequence[str]) -> str:
    """SQLite identifiers (they come from its own schema)."""
    return ", ".join('"{}"'.format(column.replace('"', '""')) for column in columns)


def _select(table: Table) -> str:
    """The copied columns from SQLite."""
    return f"SELECT {_quoted(table.columns)} FROM {_quoted([table.name])}"


def _insert(table: Table) -> sql.Composed:
    """From the staging table into the real one; (inserted, updated) counts.

    A row PostgreSQL inserted has xmax = 0; one it updated has its transaction there.
    """
    from psycopg import sql

    columns = _names(table.columns)
    key = _names(table.key)
    rest = [column for column in table.columns if column not in table.key]
    conflict: sql.Composable = sql.SQL("DO NOTHING")
    if table.mode == "upsert" and rest:
        target = sql.Identifier(table.name)
        mine = sql.SQL(", ").join(sql.SQL("{}.{}").format(target, sql.Identifier(c)) for c in rest)
        theirs = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in rest)
        conflict = sql.SQL(
            "DO UPDATE SET ({}) = ROW({}) WHERE ROW({}) IS DISTINCT FROM ROW({})"
        ).format(_names(rest), theirs, mine, theirs)
    return sql.SQL(
        "WITH written AS (INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE "
        "SELECT {} FROM {} ORDER BY {} ON CONFLICT ({}) {} RETURNING (xmax = 0) AS fresh) "
        "SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM written"
    ).format(sql.Identifier(table.name), columns, columns, _staging(table), key, key, conflict)


def _converter(pg_type: str) -> Callable[[Any], Any]:
    """SQLite keeps any value in any column; make each fit its PostgreSQL column."""
    if pg_type == "boolean":
        return lambda v: v if v is None else bool(v)
    if pg_type in ("smallint", "integer", "bigint"):
        return lambda v: int(v) if isinstance(v, float) and v.is_integer() else v
    if pg_type == "bytea":
        return lambda v: v.encode() if isinstance(v, str) else v
    if pg_type in ("text", "character varying", "character", "json", "jsonb"):
        return _text
    return lambda v: v


def _text(value: Any) -> Any:
    # PostgreSQL's text cannot hold NUL characters; SQLite's can.
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value.replace("\x00", "")
    return value if value is None else str(value)
