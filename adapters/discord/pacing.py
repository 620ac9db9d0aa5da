"""Client-side copies of Discord's rate limits, so the bot spends its budget without 429s."""

from __future__ import annotations

from collections import deque

# Slack for the gap between Discord receiving a request and us seeing its response.
MARGIN_S = 0.05


class Limiter:
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

    def available(self, now: float) -> int:
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

    def acquire(self) -> None:
        self.in_flight += 1

    def release(self, now: float) -> None:
        self.in_flight -= 1
        self._done.append(now)

    @property
    def interval(self) -> float:
        """The sustainable spacing between requests."""
        return self.per / self.limit
