"""What it keeps: message text older than TEAMBOT_RETENTION_DAYS is deleted on a schedule.

`Retention.sweep(now)` deletes it once (with the running summaries built from it; usage
rows stay, they hold no text); `start()` runs a sweep shortly after start-up and then
every hour until `aclose()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.config import Settings
from bot.store import Store

log = logging.getLogger("teambot.retention")

DAY_S = 86_400.0
INTERVAL_S = 3600.0  # between sweeps
FIRST_DELAY_S = 60.0  # after start: let the bot come up first


class Retention:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        interval: float = INTERVAL_S,
        first_delay: float = FIRST_DELAY_S,
    ) -> None:
        self.store = store
        self.days = settings.retention_days
        self.interval = interval
        self.first_delay = first_delay
        self._task: asyncio.Task[None] | None = None
        # Called after a sweep deleted messages, so caches holding their text let go.
        self.purged: Callable[[], None] = lambda: None

    @property
    def enabled(self) -> bool:
        return self.days is not None

    async def sweep(self, now: float) -> int:
        """Delete what is older than the retention period at `now`; how many messages."""
        if self.days is None:
            return 0
        deleted = await self.store.purge_older(now - self.days * DAY_S)
        log.info("retention: deleted %d messages older than %d days", deleted, self.days)
        if deleted:
            self.purged()
        return deleted

    def start(self) -> None:
        """Sweep in the background (nothing to do when retention is off)."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                await self.sweep(time.time())
            except Exception:  # a failed sweep must not end the loop
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval)
