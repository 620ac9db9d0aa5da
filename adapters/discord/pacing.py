"""Client-side copies of Discord's rate limits, so the bot spends its budget without 429s."""

from __future__ import annotations

from collections import deque

# Discord measures windows on its own clock; a small margin absorbs network jitter so our
# view of a window never ends before Discord's does.
MARGIN_S = 0.25


class Limiter:
    """At most `limit` requests in any `per`-second span (a sliding log).

    A sliding log is at least as strict as Discord's fixed windows, whatever their phase.
    """

    def __init__(self, limit: int, per: float, margin: float = MARGIN_S) -> None:
        self.limit = limit
        self.per = per + margin
        self._log: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._log and self._log[0] <= now - self.per:
            self._log.popleft()

    def available(self, now: float) -> int:
        self._trim(now)
        return self.limit - len(self._log)

    def free_at(self, now: float, keep: int = 0) -> float:
        """When a request may go out while still leaving `keep` requests unspent."""
        self._trim(now)
        used = len(self._log)
        if used + keep < self.limit:
            return now
        # The oldest entries expire first; we need (used + keep - limit + 1) of them gone.
        return self._log[used + keep - self.limit] + self.per

    def last(self) -> float:
        return self._log[-1] if self._log else float("-inf")

    def spend(self, now: float) -> None:
        self._log.append(now)

    @property
    def interval(self) -> float:
        """The sustainable spacing between requests."""
        return self.per / self.limit
