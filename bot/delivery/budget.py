"""Client-side copies of platforms' rate limits, so replies spend them without refusals.

Two shapes cover the platforms: a sliding window (Discord: N requests per T seconds,
counted on arrival) and a token bucket (Slack's per-minute tiers). Both answer the
scheduler's one question, `free_at(now, keep)`: when may a request go out and still
leave `keep` requests unspent.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

# Room for the gap between a platform receiving a request and us seeing its response.
MARGIN_S = 0.05


class Budget(Protocol):
    limit: int

    def available(self, now: float) -> float: ...

    def free_at(self, now: float, keep: int = 0) -> float: ...

    def last(self) -> float: ...

    def acquire(self, now: float) -> None: ...

    def release(self, now: float) -> None: ...

    @property
    def interval(self) -> float: ...


class SlidingWindow:
    """At most `limit` requests in any `per`-second span, as Discord counts them.

    Discord counts a request when it arrives, which we never observe: it lies somewhere
    between sending it and reading the response, and under load that gap can be long. So a
    request holds its slot while in flight and until `per` seconds after its response; any
    later request then arrives at least `per` after it, whatever the delays. This sliding
    rule is at least as strict as Discord's fixed windows, whatever their phase.
    """

    def __init__(self, limit: int, per: float, margin: float = MARGIN_S) -> None:
        self.limit = limit
        self.per = per + margin
        self.in_flight = 0
        self._done: deque[float] = deque()  # response times, in order

    def _trim(self, now: float) -> None:
        while self._done and self._done[0] <= now - self.per:
            self._done.popleft()

    def available(self, now: float) -> float:
        self._trim(now)
        return self.limit - self.in_flight - len(self._done)

    def free_at(self, now: float, keep: int = 0) -> float:
        """When a request may go out while still leaving `keep` requests unspent.

        `inf` means only a response still in flight can free a slot.
        """
        self._trim(now)
        excess = self.in_flight + len(self._done) + keep - self.limit
        if excess < 0:
            return now
        if excess >= len(self._done):
            return float("inf")
        return self._done[excess] + self.per

    def last(self) -> float:
        """When the latest request was answered; +inf while one is still in flight."""
        if self.in_flight:
            return float("inf")
        return self._done[-1] if self._done else float("-inf")

    def acquire(self, now: float) -> None:
        self.in_flight += 1

    def release(self, now: float) -> None:
        self.in_flight -= 1
        self._done.append(now)

    @property
    def interval(self) -> float:
        """The sustainable spacing between requests."""
        return self.per / self.limit


class TokenBucket:
    """`capacity` requests at once, refilled at `per_minute`: Slack's tiers.

    A bucket of capacity C refilling at r per second sends at most C + 60·r requests in
    any minute, so 12 + 38 stays under a limit of 50 a minute.
    """

    def __init__(self, capacity: int, per_minute: float, now: float = 0.0) -> None:
        self.limit = capacity
        self.rate = per_minute / 60.0
        self._tokens = float(capacity)
        self._stamp = now
        self._last = -math.inf

    def available(self, now: float) -> float:
        if now > self._stamp:
            self._tokens = min(self.limit, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def free_at(self, now: float, keep: int = 0) -> float:
        missing = keep + 1 - self.available(now)
        return now if missing <= 0 else now + missing / self.rate

    def last(self) -> float:
        return self._last

    def acquire(self, now: float) -> None:
        self.available(now)
        self._tokens -= 1.0
        self._last = now

    def release(self, now: float) -> None:
        """Nothing to give back: a token is spent when taken."""

    @property
    def interval(self) -> float:
        return 1.0 / self.rate
