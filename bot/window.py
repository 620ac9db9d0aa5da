"""An in-memory copy of one conversation's context window.

Reading and rendering a 32k-token window from SQLite on every turn costs tens of
milliseconds; keeping it in memory makes a turn cost only the new rows. The copy is
refreshed from the store by id on every turn, so writes from anywhere are seen.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable

from bot.context import Turn, merge_turns, turn
from bot.model import ChatMessage
from bot.store import Store, StoredMessage
from bot.types import ConversationKey


class Window:
    def __init__(self, start: int, rows: Iterable[StoredMessage], named: bool) -> None:
        self.start = start
        self.named = named
        self.rows: list[StoredMessage] = []
        self.order: list[tuple[int, int]] = []  # (position, id), sorted: the bisect key
        self.roles: list[str] = []
        self.texts: list[Turn] = []
        self.tokens = 0
        self.max_id = 0
        # The merged chat messages for the first `_merged_rows` rows, extended as rows
        # are appended so a turn costs only its new rows.
        self._merged: list[ChatMessage] = []
        self._merged_rows = 0
        self.add(rows)

    def add(self, rows: Iterable[StoredMessage]) -> None:
        for row in rows:
            self.max_id = max(self.max_id, row.id)
            if row.position < self.start:
                continue
            at = bisect.bisect(self.order, (row.position, row.id))
            if at < self._merged_rows:
                self._merged_rows = 0
                self._merged = []
            self.order.insert(at, (row.position, row.id))
            self.rows.insert(at, row)
            self.roles.insert(at, row.role)
            self.texts.insert(at, turn(row, self.named))
            self.tokens += row.tokens

    def holds(self, row: StoredMessage) -> bool:
        """Whether the window has `row` as it is now (same id and text)."""
        at = bisect.bisect_left(self.order, (row.position, row.id))
        return at < len(self.rows) and self.rows[at].id == row.id and self.rows[at].text == row.text

    def upto(self, position: int) -> int:
        """How many rows sit at or before `position` (later questions wait their turn)."""
        return bisect.bisect(self.order, (position, 2**62))

    def merged(self, cut: int) -> list[ChatMessage]:
        """The first `cut` rows as merged chat messages (a fresh list each call)."""
        if cut < self._merged_rows:
            self._merged, self._merged_rows = [], 0
        start = self._merged_rows
        new = zip(self.roles[start:cut], self.texts[start:cut], strict=True)
        merge_turns(new, into=self._merged)
        self._merged_rows = cut
        return list(self._merged)

    def trim(self, start: int) -> None:
        cut = bisect.bisect_left(self.order, (start, 0))
        self.tokens -= sum(row.tokens for row in self.rows[:cut])
        del self.rows[:cut], self.order[:cut], self.roles[:cut], self.texts[:cut]
        self._merged, self._merged_rows = [], 0
        self.start = start


class Windows:
    """The windows of the most recently active conversations, refreshed from the store.

    At most `size` conversations and `rows` stored messages in all: a row costs about
    2 KB in memory whatever its text, and without the second bound a bot answering
    hundreds of conversations grows until each window reaches its token budget.
    """

    def __init__(self, store: Store, size: int = 512, rows: int = 5_000) -> None:
        self.store = store
        self.size = size
        self.rows = rows
        self._cached: OrderedDict[ConversationKey, Window] = OrderedDict()

    async def get(self, key: ConversationKey, named: bool) -> Window:
        window = self._cached.get(key)
        if window is None or window.named != named:
            window = Window(*await self.store.window(str(key)), named)
        else:
            window.add(await self.store.messages_since(str(key), window.max_id))
        self._cached[key] = window
        self._cached.move_to_end(key)
        held = sum(len(cached.rows) for cached in self._cached.values())
        while len(self._cached) > 1 and (len(self._cached) > self.size or held > self.rows):
            _, oldest = self._cached.popitem(last=False)
            held -= len(oldest.rows)
        return window

    def forget(self, key: ConversationKey) -> None:
        """Drop a cached window whose rows changed in place (edits, deletes, resets)."""
        self._cached.pop(key, None)

    def forget_conversation(self, conversation: str) -> None:
        """`forget`, by the conversation's stored name (as other processes announce it)."""
        for key in [key for key in self._cached if str(key) == conversation]:
            del self._cached[key]

    def saw_question(self, key: ConversationKey, row: StoredMessage) -> None:
        """A question stored over a row the window may hold already (it was context first)."""
        cached = self._cached.get(key)
        if cached is not None and row.id <= cached.max_id and not cached.holds(row):
            self.forget(key)
