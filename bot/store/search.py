"""Search as both backends do it, whatever their SQL.

- Terms: `search_terms` turns a query into its words (lower case, no stop words, each
  once, at most MAX_TERMS), so both backends look for the same words and nothing in a
  query is ever query syntax.
- Ranking: each pass ranks only the newest CANDIDATES matches, by
      score = tier + relevance / best relevance among the candidates
                   / (1 + age / RECENCY_SECONDS)
  relevance being the backend's own (FTS5's -bm25, PostgreSQL's ts_rank). The decay
  halves a hit's weight at 30 days, a third at 60; `tier` is 1 for hits with every term
  and 0 for the any-term fill-up, so all-terms hits always rank first.
- Snippets: terms marked with **, cut to SNIPPET_CHARS (`trim_snippet`).
- Also which rows are searched (SEARCHABLE_ROW) and in which places (`searched_places`).
- And, not search at all, how a reservation against spending limits is granted
  (`spend_grant`), which both backends decide alike once they have summed what is spent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.store import AuditEntry, Budget, Hit, PlaceInfo, Scope, SearchQuery, StoredMessage

MAX_TERMS = 16  # a pasted page is not a query: its first distinct words are
MAX_TERM_CHARS = 64  # longer "words" are pasted ids or base64, not what people look for
MAX_HITS = 50
# Each query ranks only the newest CANDIDATES readable matches, so a common word costs
# the same as a rare one; with recency in the score, older matches rarely make the cut.
CANDIDATES = 200
RECENCY_SECONDS = 30 * 86400.0  # a hit this old counts half as much as one from today
SNIPPET_CHARS = 200
MAX_CONTEXT = 200  # messages `around` reads on either side, at the most
MAX_SPAN = 50_000  # messages `span` returns, at the most
_WORD = re.compile(r"\w+")
# Dollars summed in floating point are off by this much at the most: room left within it
# of what is wanted counts as enough (1e-9 of a dollar is far below any price).
SPEND_EPSILON = 1e-9
# The PostgreSQL advisory lock every `reserve` holds for its transaction (the migration
# lock is 7415550001): one reservation at a time across every process on the database.
SPEND_LOCK = 7415550002
# PostgreSQL's 'english' stop words: dropped from queries on both backends, so a question
# phrased in words ("what did we decide about the release") searches for what it is about.
STOPWORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what which
    who whom this that these those am is are was were be been being have has had having do
    does did doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in out on
    off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will
    just don should now""".split()
)
# Only people's own messages are searched: the bot's answers and seeded copies repeat
# what someone already said. `{0}` is the row's prefix: "m.", "new.", "NEW." or "".
SEARCHABLE_ROW = "{0}role = 'user' AND {0}copied = 0 AND {0}platform_id IS NOT NULL"


def search_terms(text: str) -> list[str]:
    """The words of `text` to search for: lower case, no stop words, each once, in order.

    Only runs of letters and digits survive, so nothing in `text` is ever query syntax.
    """
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and len(word) <= MAX_TERM_CHARS and word not in terms:
            terms.append(word)
            if len(terms) == MAX_TERMS:
                break
    return terms


def key_field(key: str, n: int) -> str:
    """Part `n` of a place key "platform:space:place id", or "" when it has none."""
    parts = key.split(":")
    return parts[n] if len(parts) > n else ""


def place_values(place: PlaceInfo, now: float) -> list[Any]:
    """The `places` row of `place` noted at `now`: key, platform, space, name, visibility
    and updated_at."""
    return [
        place.key,
        key_field(place.key, 0),
        key_field(place.key, 1),
        place.name,
        place.visibility,
        now,
    ]


def readable_spaces(scope: Scope) -> tuple[str, ...]:
    """The spaces whose public places `scope` reads: its own space unless it names some."""
    return scope.spaces or (key_field(scope.place, 1),)


def searched_places(scope: Scope, query: SearchQuery, readable: Iterable[str]) -> list[str]:
    """The places a search looks in: the scope's own (even when not on record), then the
    other `readable` place keys; only `query.place` of them when the query names one."""
    places = [scope.place] if scope.place else []
    places += [place for place in readable if place != scope.place]
    if query.place is not None:
        places = [place for place in places if place == query.place]
    return places


def hits_wanted(query: SearchQuery) -> int:
    return max(1, min(MAX_HITS, query.limit))


def trim_snippet(snippet: str | None, text: str) -> str:
    """At most SNIPPET_CHARS of the snippet, its ** marks still paired."""
    cut = (snippet or text)[:SNIPPET_CHARS]
    return cut + "**" if cut.count("**") % 2 else cut


def hit_from_row(row: dict[str, Any]) -> Hit:
    """A search row: the message's columns plus score, snippet and its place's."""
    place = PlaceInfo(
        row["place_key"], row["place_name"] or "", row["place_visibility"] or "private"
    )
    snippet = trim_snippet(row["snippet"], row["text"])
    return Hit(StoredMessage.from_row(row), place, snippet, float(row["score"]))


def clamp_context(count: int) -> int:
    """How many messages `around` reads on one side: 0 to MAX_CONTEXT."""
    return max(0, min(MAX_CONTEXT, count))


def clamp_span(limit: int) -> int:
    """How many messages `span` returns at the most: 1 to MAX_SPAN."""
    return max(1, min(MAX_SPAN, limit))


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (None when there is
    none: `prefix` is empty or all U+10FFFF), in code point order, which is also the
    order of their UTF-8 bytes (SQLite's BINARY collation, PostgreSQL's "C").

    `key >= prefix AND key < prefix_end(prefix)` is then an index range holding exactly
    the keys that start with `prefix`, whatever characters it has (`%` and `_` included).
    """
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return None
    code = ord(stem[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:  # surrogates are not characters: skip past them
        code = 0xE000
    return stem[:-1] + chr(code)


@dataclass
class Where:
    """SQL conditions joined by AND, and their named parameters."""

    conditions: list[str]
    params: dict[str, Any]

    def add(self, condition: str, **params: Any) -> None:
        self.conditions.append(condition)
        self.params |= params


def spend_limit(budget: Budget, override: float | None) -> float | None:
    """The limit that applies to `budget`: its stored override if any, else its own."""
    return budget.limit if override is None else float(override)


def spend_grant(
    totals: dict[str, tuple[float, float | None]], want: float, least: float
) -> tuple[float | None, dict[str, float]]:
    """What a reservation gets, from scope -> (spent incl. live holds, limit): `want` when
    every limited scope has room for it, what the tightest has left when that is at least
    `least`, else None (refused); and what each limited scope has left (negative when
    overspent)."""
    lefts = {scope: limit - spent for scope, (spent, limit) in totals.items() if limit is not None}
    room = min(lefts.values(), default=want)
    granted = want if room >= want - SPEND_EPSILON else max(room, 0.0)
    return (granted if granted >= least - SPEND_EPSILON else None), lefts


# What it keeps and forgets (`forget_user`, `export_user`, `purge_older`), alike in both
# backends: usage rows of a forgotten user keep their numbers under this id.
FORGOTTEN = "forgotten"
MEMORY = "memory"  # the conversation setting holding its running summary (bot/memory.py)
PURGE_BATCH = 5_000  # messages `purge_older` deletes per transaction
USAGE_EXPORTED = (
    "created_at",
    "platform",
    "conversation",
    "user_id",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "outcome",
    "kind",
    "cached_tokens",
)


def exported_message(row: dict[str, Any]) -> dict[str, Any]:
    """A `messages` row as `export_user` shows it."""
    message = StoredMessage.from_row(row)
    return {
        "id": message.id,
        "conversation": message.conversation,
        "platform_id": message.platform_id,
        "role": message.role,
        "author_id": message.author_id,
        "author_name": message.author_name,
        "text": message.text,
        "attachments": [vars(a) for a in message.attachments],
        "created_at": message.created_at,
        "reply_to": message.reply_to,
        "copied": message.copied,
    }


def exported_usage(row: dict[str, Any]) -> dict[str, Any]:
    """A `usage` row as `export_user` shows it."""
    return {name: row[name] for name in USAGE_EXPORTED}


def exported_audit(entry: AuditEntry) -> dict[str, Any]:
    return {
        "created_at": entry.created_at,
        "platform": entry.platform,
        "actor": entry.actor,
        "action": entry.action,
        "detail": entry.detail,
    }


def user_export(
    platform: str | None,
    user_id: str,
    messages: list[dict[str, Any]],
    usage: list[dict[str, Any]],
    settings: list[dict[str, Any]],
    audit: list[AuditEntry],
) -> dict[str, Any]:
    """`export_user`'s answer from the rows each backend read (settings: conversation,
    name, value of the user's DM conversations)."""
    dm_settings: dict[str, dict[str, str]] = {}
    for row in settings:
        dm_settings.setdefault(row["conversation"], {})[row["name"]] = row["value"]
    return {
        "user_id": user_id,
        "platform": platform,
        "messages": [exported_message(row) for row in messages],
        "usage": [exported_usage(row) for row in usage],
        "dm_settings": dm_settings,
        "audit": [exported_audit(entry) for entry in audit],
    }
