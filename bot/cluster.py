"""What the bot processes sharing one store agree on: whose turn it is, what changed.

One reply at a time per conversation, started in arrival order, and caches that drop
what another process changed. With SQLite there is one process, so `LocalCluster`
does both in memory. With PostgreSQL, `bot.store.pg_cluster.PostgresCluster` keeps the
queue of turns in a table and announces changes with LISTEN/NOTIFY, so any number of
processes on one database behave as one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

# A change handler gets (topic, key): ("settings", conversation), ("window",
# conversation), ("texts", "") after deletions across conversations, ("limits", ""),
# and ("*", "") when changes may have been missed and every cache must go.
OnChange = Callable[[str, str], None]


class Cluster(Protocol):
    # This process's number among those sharing the store (see bot/journal.py).
    owner: int

    def turn(self, conversation: str, question: int) -> AbstractAsyncContextManager[bool]:
        """Wait for the replies to `conversation`'s earlier questions (in any process),
        then hold its turn for the reply to `question` (the stored question's row id).

        Questions take turns in the order the store stored them (`Store.add_question`
        enters the turn). The value is True when the turn had to wait for another reply.
        """
        ...

    async def publish(self, topic: str, key: str = "") -> None:
        """Tell the other processes that `topic`/`key` changed (this one knows)."""
        ...

    def on_change(self, handler: OnChange) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class _Queue:
    """A FIFO lock for one conversation and how many replies are queued on it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class LocalCluster:
    """One process: turns are asyncio locks, taken in the order questions were stored
    (the engine asks in that order); there is nobody to tell about changes."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self.owner = random.randrange(1, 2**31)

    @asynccontextmanager
    async def turn(self, conversation: str, question: int) -> AsyncIterator[bool]:
        queue = self._queues.get(conversation)
        if queue is None:
            queue = self._queues[conversation] = _Queue()
        queue.users += 1
        try:
            waited = queue.lock.locked()
            async with queue.lock:  # asyncio.Lock wakes its waiters first in, first out
                yield waited
        finally:
            queue.users -= 1
            if not queue.users:
                self._queues.pop(conversation, None)

    async def publish(self, topic: str, key: str = "") -> None:
        return None

    def on_change(self, handler: OnChange) -> None:
        return None

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
