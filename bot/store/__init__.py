"""Where conversations are remembered.

`Store` is the interface the engine uses; `open_store(url)` picks a backend from
DATABASE_URL. Records are plain dataclasses, so no database types leak out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.cluster import Cluster
from bot.types import AttachmentMeta

# The `messages` columns a new message fills, in `NewMessage.values()` order.
INSERT_COLUMNS = (
    "conversation",
    "platform_id",
    "role",
    "author_id",
    "author_name",
    "text",
    "thinking",
    "attachments",
    "tokens",
    "reply_to",
    "created_at",
    "copied",
    "rounds",
)


def _attachments(raw: str | None) -> tuple[AttachmentMeta, ...]:
    """The `attachments` column: a JSON list of {name, mime, size}."""
    return tuple(
        AttachmentMeta(str(a.get("name", "")), str(a.get("mime", "")), int(a.get("size") or 0))
        for a in json.loads(raw or "[]")
    )


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation: str
    role: str  # "user" or "assistant"
    author_id: str
    author_name: str
    text: str
    tokens: int
    created_at: float
    platform_id: str | None = None
    reply_to: int | None = None
    thinking: str = ""
    attachments: tuple[AttachmentMeta, ...] = ()
    copied: bool = False  # a copy seeded from another conversation (search skips it)
    rounds: str = ""  # an answer's tool rounds, as JSON (see bot/tools/rounds.py)

    @property
    def position(self) -> int:
        """Conversation order: a reply sits right after the message it answers."""
        return self.reply_to if self.reply_to is not None else self.id

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StoredMessage:
        """A `messages` row, as either backend returns it."""
        return cls(
            id=row["id"],
            conversation=row["conversation"],
            role=row["role"],
            author_id=row["author_id"] or "",
            author_name=row["author_name"] or "",
            text=row["text"],
            tokens=row["tokens"],
            created_at=row["created_at"],
            platform_id=row["platform_id"],
            reply_to=row["reply_to"],
            thinking=row["thinking"] or "",
            attachments=_attachments(row["attachments"]),
            copied=bool(row.get("copied")),
            rounds=row.get("rounds") or "",
        )

    def copy_to(self, conversation: str) -> NewMessage:
        """This message as the start of another conversation (its reply link stays behind)."""
        return NewMessage(
            conversation=conversation,
            role=self.role,
            author_id=self.author_id,
            author_name=self.author_name,
            text=self.text,
            tokens=self.tokens,
            platform_id=self.platform_id,
            thinking=self.thinking,
            attachments=self.attachments,
            created_at=self.created_at,
            copied=True,
            rounds=self.rounds,
        )


@dataclass(frozen=True)
class NewMessage:
    conversation: str
    role: str
    author_id: str
    author_name: str
    text: str
    tokens: int
    platform_id: str | None = None
    reply_to: int | None = None
    thinking: str = ""
    attachments: tuple[AttachmentMeta, ...] = ()
    created_at: float | None = None
    copied: bool = False
    rounds: str = ""

    def values(self, created_at: float) -> list[Any]:
        """Column values in `INSERT_COLUMNS` order."""
        return [
            self.conversation,
            self.platform_id,
            self.role,
            self.author_id,
            self.author_name,
            self.text,
            self.thinking,
            json.dumps([vars(a) for a in self.attachments]),
            self.tokens,
            self.reply_to,
            created_at,
            int(self.copied),
            self.rounds or None,
        ]

    def stored(self, row_id: int, created_at: float) -> StoredMessage:
        """This message as the store now holds it."""
        return StoredMessage(
            id=row_id,
            conversation=self.conversation,
            role=self.role,
            author_id=self.author_id,
            author_name=self.author_name,
            text=self.text,
            tokens=self.tokens,
            created_at=created_at,
            platform_id=self.platform_id,
            reply_to=self.reply_to,
            thinking=self.thinking,
            attachments=self.attachments,
            copied=self.copied,
            rounds=self.rounds,
        )


@dataclass(frozen=True)
class UsageRecord:
    platform: str
    conversation: str
    user_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    outcome: str  # "ok", "cut_off", or the error class name
    created_at: float | None = None
    kind: str = "reply"  # "reply", "tool_round", later "summary", "ocr", ...
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache


@dataclass(frozen=True)
class UsageTotals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached_tokens: int = 0  # of prompt_tokens

    @property
    def cached_share(self) -> float:
        """The part of the prompt tokens the provider's cache served, 0 to 1."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens > 0 else 0.0


@dataclass(frozen=True)
class UsageRow:
    """One line of the `teambot usage` table."""

    day: str
    platform: str
    user_id: str
    totals: UsageTotals = field(default_factory=UsageTotals)


@dataclass(frozen=True)
class PlaceInfo:
    """A place as the store keeps it; `key` is "platform:space:place id"."""

    key: str
    name: str = ""
    visibility: str = "private"  # bot.types.PUBLIC, PRIVATE or DM

    @property
    def platform(self) -> str:
        return self.key.split(":", 2)[0]

    @property
    def space(self) -> str:
        return self.key.split(":", 2)[1]


@dataclass(frozen=True)
class Scope:
    """What one asker may read: the place they ask in, plus the public places of `spaces`
    on the same platform. Everything else (other DMs, other private channels, other
    guilds or workspaces, deleted messages) is invisible to every read that takes a Scope.
    """

    platform: str
    place: str  # place key of the conversation asked in
    spaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchQuery:
    text: str  # any user text; never parsed as query syntax
    place: str | None = None  # only this place (a place key)
    author: str | None = None  # an author id, or part of a display name
    after: float | None = None  # unix times
    before: float | None = None
    limit: int = 10


@dataclass(frozen=True)
class Hit:
    message: StoredMessage
    place: PlaceInfo
    snippet: str  # the matching part of the text, terms marked with **
    score: float  # higher is better: relevance blended with recency


@dataclass(frozen=True)
class Budget:
    """One spending limit that applies to a model call, over one period.

    `scope` names it ("user:discord:123:day", "channel:slack:T1:C1:day", "bot:day", ...);
    a stored override for that scope replaces `limit` (None: no limit unless overridden).
    Spent is the cost of usage rows since `since` matching the filter (`platform` +
    `user_id`; or conversations under `prefix`; or everything), plus live holds.
    """

    scope: str
    since: float
    limit: float | None
    platform: str | None = None
    user_id: str | None = None
    prefix: str | None = None


@dataclass(frozen=True)
class Hold:
    """Money set aside for a call in flight, until its usage is recorded."""

    platform: str
    user_id: str
    conversation: str
    expires_at: float  # a crashed process's holds lapse


@dataclass(frozen=True)
class AuditEntry:
    platform: str
    actor: str  # who did it (platform user id, or "shell")
    action: str  # "limits", "system", "tools", "forget", ...
    detail: str
    created_at: float | None = None


@dataclass(frozen=True)
class Asked:
    """A stored question and what became of it: what Stop, Regenerate and votes act on.

    Adapters keep only the question's row id (in their buttons); this is everything else
    a later click needs, in any process, after a restart.
    """

    question: StoredMessage
    answer: StoredMessage | None = None  # its current answer, when one is stored
    place: PlaceInfo | None = None  # where its conversation lives, when noted
    reasoning: bool | None = None  # the question's own reasoning choice (`think:`, an option)
    window_start: int = 0  # where its conversation's prompt window starts
    # A live process holds or waits for its turn (PostgreSQL's `turns`; SQLite has one
    # process, which knows its own replies).
    running: bool = False
    stopped_by: str | None = None  # who pressed Stop on its answer, if anyone did


@dataclass(frozen=True)
class Vote:
    """One person's 👍 (+1) or 👎 (-1) on an answer."""

    answer: int
    question: int
    conversation: str
    platform: str
    user_id: str
    value: int


@dataclass(frozen=True)
class RatedAnswer:
    """An answer (current or a previous version) with its votes."""

    answer: int
    conversation: str
    platform_id: str | None
    up: int
    down: int
    text: str


@dataclass(frozen=True)
class FeedbackReport:
    days: list[tuple[str, int, int]]  # (UTC day, 👍, 👎), oldest first
    worst: list[RatedAnswer]  # most 👎 over 👍 first; only answers with a 👎


@dataclass(frozen=True)
class Orphan:
    """A reply whose process died while it was showing (see bot/journal.py)."""

    question: int
    conversation: str
    refs: tuple[str, ...]  # the platform's ids of the messages holding it, in order
    shown: tuple[str, ...]  # what each showed when last recorded
    answered: bool  # its answer was stored before the process died


def orphan_from_row(row: Mapping[str, Any]) -> Orphan:
    return Orphan(
        question=int(row["question"]),
        conversation=str(row["conversation"]),
        refs=tuple(json.loads(row["refs"])),
        shown=tuple(json.loads(row["shown"])),
        answered=bool(row["answered"]),
    )


class Store(Protocol):
    # Turns and change news shared by every process on this store (see bot/cluster.py).
    cluster: Cluster

    async def add_message(self, message: NewMessage) -> int | None:
        """Insert; return the new id, or None when (conversation, platform_id) exists."""
        ...

    async def add_question(self, event_key: str, message: NewMessage) -> StoredMessage | None:
        """Claim `event_key` and store `message` in one transaction; None if claimed before.
        The question's reply is recorded as in progress in the same transaction
        (`replies_in_progress`, see bot/journal.py).

        A message already stored under the same platform id (recorded as context before
        it was addressed to the bot) takes the new text and token count.
        """
        ...

    async def update_message(
        self, conversation: str, platform_id: str, text: str, tokens: int
    ) -> bool: ...

    async def delete_message(self, conversation: str, platform_id: str) -> bool: ...

    async def messages(
        self, conversation: str, *, from_id: int = 0, to_id: int | None = None
    ) -> list[StoredMessage]:
        """Messages whose position is within [from_id, to_id], in conversation order."""
        ...

    async def messages_since(self, conversation: str, after_id: int) -> list[StoredMessage]:
        """Messages with id > after_id, in insertion order (to refresh a cached window)."""
        ...

    async def seed(self, source: str, target: str, limit: int) -> int:
        """Copy the newest `limit` messages of `source` into `target` if `target` is empty.

        One transaction; returns how many were copied (0 when `target` had messages).
        """
        ...

    async def answered(self, conversation: str) -> bool:
        """Whether the conversation holds any answer of the bot's."""
        ...

    async def forget(self, conversation: str) -> int:
        """Delete every message of the conversation; return how many."""
        ...

    async def window(self, conversation: str) -> tuple[int, list[StoredMessage]]:
        """Where the prompt window starts, and the messages from there on, in order."""
        ...

    async def set_window_start(self, conversation: str, message_id: int) -> None: ...

    async def settings(self, conversation: str) -> dict[str, str]: ...

    async def set_setting(self, conversation: str, name: str, value: str | None) -> None: ...

    async def claim_event(self, event_key: str) -> bool:
        """True the first time `event_key` is claimed, False ever after."""
        ...

    async def record_usage(self, record: UsageRecord) -> None: ...

    async def usage_totals(
        self,
        *,
        since: float | None = None,
        user_id: str | None = None,
        conversation: str | None = None,
        kind: str | None = None,
    ) -> UsageTotals: ...

    async def usage_rows(self, *, since: float | None = None) -> Sequence[UsageRow]: ...

    # Places, search and reads within a scope (the tools' view of the team's history)

    async def note_place(self, conversation: str, place: PlaceInfo) -> None:
        """Upsert the place's name and visibility and file `conversation` under it."""
        ...

    async def places(self, scope: Scope) -> list[PlaceInfo]:
        """Every place `scope` may read, by name."""
        ...

    async def search(self, scope: Scope, query: SearchQuery) -> list[Hit]:
        """Stored people's messages (not the bot's, not seeded copies) matching `query`
        within `scope`, best first."""
        ...

    async def locate(self, scope: Scope, prefix: str, platform_id: str) -> StoredMessage | None:
        """The message with `platform_id` in a conversation whose key starts with `prefix`
        (e.g. "slack:T1:C1:" or "discord:G1:"), if `scope` may read it."""
        ...

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
        """Messages of `conversation` around a message (by id) or a time, in conversation
        order; the newest `before` when neither is given; [] when `scope` may not read it."""
        ...

    async def span(
        self, scope: Scope, prefix: str, since: float, until: float, limit: int = 10_000
    ) -> list[StoredMessage]:
        """Messages (people's and the bot's, not seeded copies) of every conversation whose
        key starts with `prefix` (a channel and its threads: "slack:T1:C1:"; one
        conversation: its whole key), created in [since, until), oldest first, at most
        `limit` (the newest ones when there are more); [] for what `scope` may not read."""
        ...

    async def settings_named(self, name: str) -> list[tuple[str, str]]:
        """(conversation, value) of every conversation that has setting `name`."""
        ...

    # Spending limits: atomic across processes sharing the database

    async def reserve(
        self, budgets: Sequence[Budget], want: float, least: float, hold: Hold
    ) -> tuple[float, int | None, dict[str, float]]:
        """Set aside up to `want` dollars for a call within every budget, atomically.

        Returns (granted, hold id, what each limited scope has left before this hold).
        `granted` is `want` when it fits, less when only that fits, 0.0 (and no hold) when
        less than `least` fits. Budgets with no limit (and no override) do not constrain.
        """
        ...

    async def release(self, hold_id: int) -> None:
        """Drop a hold (its call's usage has been recorded, or it never ran)."""
        ...

    async def spent(self, budgets: Sequence[Budget]) -> dict[str, tuple[float, float | None]]:
        """scope -> (spent incl. live holds, limit after overrides)."""
        ...

    async def set_spend_limit(self, scope: str, amount: float | None) -> None:
        """Override the limit of `scope` (None removes the override)."""
        ...

    async def has_spend_limits(self) -> bool:
        """Whether any limit override is stored (else only the configured limits apply)."""
        ...

    async def add_audit(self, entry: AuditEntry) -> None: ...

    # What it keeps and forgets

    async def forget_user(self, platform: str, user_id: str) -> int:
        """Delete every message `user_id` wrote on `platform` and their DM conversations
        (conversations on that platform whose place is a DM they wrote in), with those
        conversations' running summaries ('memory' settings); anonymise their usage rows
        (user_id becomes "forgotten"). Returns how many messages were deleted."""
        ...

    async def export_user(self, platform: str | None, user_id: str) -> dict[str, Any]:
        """Everything stored about `user_id` (on `platform`, or every platform): their
        messages, usage rows, settings of their DMs, audit entries by them; JSON-ready."""
        ...

    async def purge_older(self, before: float) -> int:
        """Delete messages created before `before` (usage rows stay: they hold no text) and
        the running summaries ('memory' settings) of conversations that lost messages, and
        the text read out of files (`extract`) kept since before then.
        Returns how many messages were deleted."""
        ...

    async def audit_entries(self, *, since: float = 0.0) -> list[AuditEntry]: ...

    async def get_meta(self, name: str) -> str | None: ...

    async def set_meta(self, name: str, value: str) -> None: ...

    # What was read out of attached files (OCR pages, transcripts), kept by content hash

    async def extract(self, key: str) -> str | None:
        """The text kept under `key` (a file's sha256 plus how it was read), if any."""
        ...

    async def save_extract(self, key: str, kind: str, content: str) -> None:
        """Keep `content` (of `kind`: "ocr", "pdf_text", "transcript") under `key`;
        saving the same key again replaces it."""
        ...

    # Stop, Regenerate and feedback (bot/control.py)

    async def asked(self, question: int) -> Asked | None:
        """The question with row id `question` and its current answer (None if no such
        question is stored)."""
        ...

    async def note_reply(
        self,
        question: int,
        conversation: str,
        *,
        reasoning: bool | None = None,
        stopped_by: str | None = None,
    ) -> None:
        """Remember the question's own reasoning choice, or who stopped its answer
        (a field left None keeps what is noted)."""
        ...

    async def replace_answer(self, question: int, answer: NewMessage) -> int:
        """Store `answer` as the question's answer in one transaction: its current answer
        rows leave `messages` (so no window or search sees them) for `message_versions`,
        kept as previous versions. Returns the new answer's id."""
        ...

    async def answer_versions(self, question: int) -> list[StoredMessage]:
        """The question's previous answers (replaced by Regenerate), oldest first."""
        ...

    async def answer_posted(self, answer: int, platform_id: str) -> bool:
        """Note the platform's id of the message showing answer `answer` (for links);
        False when there is no such answer or its conversation has that id already."""
        ...

    async def vote(self, vote: Vote) -> int | None:
        """Store a vote, replacing the voter's earlier one on that answer; returns the
        earlier value (None for a first vote)."""
        ...

    async def feedback_report(self, *, since: float, worst: int = 10) -> FeedbackReport:
        """Votes per UTC day since `since`, and the `worst` lowest-rated answers."""
        ...

    async def enter_turn(self, conversation: str, question: int) -> None:
        """Queue a turn for an already stored question (Regenerate), as `add_question`
        does for a new one; `cluster.turn(conversation, question)` then waits for it."""
        ...

    # Replies in progress (bot/journal.py)

    async def reply_progress(
        self, question: int, refs: Sequence[str], shown: Sequence[str]
    ) -> None: ...

    async def reply_ended(self, question: int) -> None: ...

    async def take_orphaned_replies(self, platform: str) -> list[Orphan]:
        """Remove and return `platform`'s replies in progress whose process is gone."""
        ...

    async def aclose(self) -> None: ...


async def open_store(url: str) -> Store:
    """Open the store named by DATABASE_URL (sqlite:///path or postgresql://...)."""
    if url.startswith("sqlite:///"):
        from bot.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url.removeprefix("sqlite:///"))
    try:
        from bot.store.postgres import PostgresStore
    except ImportError as exc:
        from bot.errors import ConfigError

        raise ConfigError(
            "DATABASE_URL",
            "postgresql:// needs the postgres extra: pip install 'teambot[postgres]'",
        ) from exc
    return await PostgresStore.open(url)
