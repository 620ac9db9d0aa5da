"""Shared Web API budgets so that no reply is ever refused with `ratelimited`.

Slack limits each method per workspace (chat.update: Tier 3, about 50 a minute),
and chat.postMessage to about one a second per channel. Every reply in flight draws
from the same buckets. A token bucket of capacity C refilling at r per second sends
at most C + 60·r calls in any minute, so 12 + 38 stays under Slack's 50; the burst of 12
lets about ten replies that start together all stream.

Final updates (the complete answer) queue in FIFO order and always get a token;
interim streaming updates only take one when enough is left for the finals of every
other reply that is already showing partial text.
"""

from __future__ import annotations

import asyncio
import time


class Bucket:
    def __init__(self, capacity: float, per_minute: float) -> None:
        self.capacity = capacity
        self.rate = per_minute / 60.0
        self._tokens = capacity
        self._stamp = time.monotonic()
        self._queue = asyncio.Lock()  # asyncio.Lock wakes waiters in FIFO order

    def available(self) -> float:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def try_take(self, keep: float = 0.0) -> bool:
        """Take a token now if one is free after leaving `keep`, and nobody is queued."""
        if self._queue.locked() or self.available() - 1.0 < keep:
            return False
        self._tokens -= 1.0
        return True

    async def take(self) -> None:
        """Wait (FIFO) for a token."""
        async with self._queue:
            # Tokens arrive with time, not with an event: sleep exactly until the next one.
            while self.available() < 1.0:  # noqa: ASYNC110
                await asyncio.sleep((1.0 - self._tokens) / self.rate)
            self._tokens -= 1.0

    @property
    def waiting(self) -> bool:
        return self._queue.locked()


class Budgets:
    """Every rate-limited method the adapter uses, for one workspace."""

    def __init__(self) -> None:
        self.update = Bucket(12, 38)
        self.stream_edges = Bucket(4, 15)  # chat.startStream + chat.stopStream (Tier 2)
        self.stream_append = Bucket(10, 80)  # chat.appendStream (Tier 4)
        self._channels: dict[str, Bucket] = {}
        self.live = 0  # replies showing partial text that still owe a final update

    def channel(self, channel: str) -> Bucket:
        bucket = self._channels.get(channel)
        if bucket is None:
            # One post per 1.25 s: never more than 3 in any 3 s, nor 1 in any 1.25 s.
            bucket = self._channels[channel] = Bucket(1, 48)
        return bucket

    def can_go_live(self) -> bool:
        """Whether one more reply can show partial text with its final update paid for.

        Keeping a token on hand for the final of every live reply means a finished answer
        never waits; replies that can't go live show a status and post complete.
        """
        return not self.update.waiting and self.live + 1 <= self.update.available()

    def try_interim(self) -> bool:
        # Every live reply, this one included, still needs a token for its final edit.
        return self.update.try_take(keep=self.live)
