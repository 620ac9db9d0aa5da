"""Pacing every reply's requests so Discord's rate limits are spent well and never exceeded.

One `Pacer` per adapter owns every bucket. Replies mark themselves dirty as text arrives;
the pacer grants requests by priority (final text, first text, overflow, growth) whenever
both the channel's bucket and the global bucket allow, so the final edit goes out the
moment it can, growth edits spread over what the bucket sustains, and nothing earns a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

import discord

from adapters.discord.pacing import Limiter
from adapters.discord.streaming import Priority, ReplyStream, Target

log = logging.getLogger(__name__)

CHANNEL_LIMIT = (5, 5.0)  # sends + edits per channel (shared)
WEBHOOK_LIMIT = (5, 5.0)  # follow-up sends + edits per interaction token
GLOBAL_LIMIT = (48, 1.0)  # Discord allows 50/s; leave room for the library's own calls
TYPING_EVERY_S = 8.0  # a typing indicator lasts about 10 s


class Pacer:
    def __init__(self) -> None:
        self._streams: set[ReplyStream] = set()
        self._buckets: dict[str, Limiter] = {}
        self._typing: dict[str, float] = {}
        self._global = Limiter(*GLOBAL_LIMIT)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._waiting_first = 0

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def open(self, target: Target, prefix: str = "") -> ReplyStream:
        stream = ReplyStream(target, prefix, self.now, self.kick)
        self._streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="discord-pacer")
        self.kick()
        return stream

    def kick(self) -> None:
        self._wake.set()

    def idle(self) -> bool:
        """No reply is still streaming or landing."""
        return all(s.closed.is_set() and not s.inflight for s in self._streams)

    async def drain(self) -> None:
        """Until every finished reply has landed its final text."""
        landing = [s.closed.wait() for s in self._streams if s.final]
        await asyncio.gather(*landing)

    async def close(self) -> None:
        for stream in list(self._streams):
            stream.abandon()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in list(self._jobs):
            job.cancel()

    def _bucket(self, key: str) -> Limiter:
        found = self._buckets.get(key)
        if found is None:
            limit = WEBHOOK_LIMIT if key.startswith("webhook:") else CHANNEL_LIMIT
            found = self._buckets[key] = Limiter(*limit)
        return found

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = self._grant(self.now())
            except Exception:
                # A bug here must not strand every reply in flight; log it and go on.
                log.exception("reply pacing failed")
                delay = 0.5
            if len(self._buckets) > 512 or (delay is None and not self._streams):
                self._prune()  # an idle bucket knows nothing a fresh one would not
            if delay is None and not self._streams:
                delay = 60.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _grant(self, now: float) -> float | None:
        """Start every request the buckets allow now; return how long until the next one may.

        None means nothing is due until a reply changes or a request completes.
        """
        waiting: list[tuple[Priority, float, ReplyStream]] = []
        for stream in list(self._streams):
            if stream.closed.is_set() and not stream.inflight:
                self._streams.discard(stream)
                continue
            prio = stream.priority()
            if prio is not None:
                waiting.append((prio, stream.since, stream))
        wake = self._typing_due(now)
        waiting.sort(key=lambda item: (item[0], item[1]))
        for prio, _, stream in waiting:
            at = self._allowed_at(stream, prio, now)
            if at <= now:
                self._start(stream)
            else:
                wake = min(wake, at)
        return None if wake == math.inf else max(0.0, wake - now)

    def _typing_due(self, now: float) -> float:
        """Send typing for replies still waiting for text; when the next renewal is due."""
        self._waiting_first = sum(1 for s in self._streams if not s.handles)
        wake = math.inf
        for stream in self._streams:
            if not stream.handles and not stream.inflight and not stream.dirty:
                again = self._maybe_type(stream, now)
                if again is not None:
                    wake = min(wake, again)
        return wake

    def _prune(self) -> None:
        """Forget idle buckets (one per channel and per interaction ever answered)."""
        now = self.now()
        idle = [k for k, b in self._buckets.items() if b.available(now) == b.limit]
        for key in idle:
            del self._buckets[key]
        self._typing = {k: t for k, t in self._typing.items() if now - t < TYPING_EVERY_S}

    def _allowed_at(self, stream: ReplyStream, prio: Priority, now: float) -> float:
        bucket = self._bucket(stream.target.bucket)
        if prio >= Priority.OVERFLOW:
            # Keep one request in hand so a finished reply lands at once, and spread growth
            # at the rate the bucket sustains.
            at = max(bucket.free_at(now, keep=1), bucket.last() + bucket.interval)
        else:
            at = bucket.free_at(now)
        if stream.target.counts_global:
            # Growth may use only a third of the global budget, so when many replies finish
            # at once (or start showing text) their requests find the rest waiting.
            keep = 0 if prio <= Priority.FIRST else self._global.limit * 2 // 3
            at = max(at, self._global.free_at(now, keep=keep))
        return at

    def _start(self, stream: ReplyStream) -> None:
        self._bucket(stream.target.bucket).acquire()
        if stream.target.counts_global:
            self._global.acquire()
        stream.inflight = True
        self._spawn(self._perform(stream))

    def _maybe_type(self, stream: ReplyStream, now: float) -> float | None:
        """Show "typing…" while a reply waits for its first text; returns when to renew it."""
        target = stream.target
        if target.typing is None or stream.closed.is_set():
            return None
        due = self._typing.get(target.bucket, float("-inf")) + TYPING_EVERY_S
        if now < due:
            return due
        # Typing is a courtesy: only when the global budget can also cover the first text
        # of every reply still waiting for it.
        if self._global.available(now) < self._global.limit // 2 + self._waiting_first:
            return None
        self._typing[target.bucket] = now
        self._global.acquire()
        self._spawn(self._type(target.typing))
        return now + TYPING_EVERY_S

    async def _type(self, typing: Callable[[], Awaitable[None]]) -> None:
        try:
            await typing()
        except discord.HTTPException as exc:
            log.info("typing indicator failed: %s", exc.status)
        finally:
            self._global.release(self.now())
            self.kick()

    async def _perform(self, stream: ReplyStream) -> None:
        try:
            await stream.step()
        except discord.HTTPException as exc:
            log.warning(
                "Discord refused a reply update (HTTP %s, code %s); giving up on it",
                exc.status,
                exc.code,
            )
            stream.abandon()
        except Exception:
            log.exception("reply update failed")
            stream.abandon()
        finally:
            stream.inflight = False
            self._bucket(stream.target.bucket).release(self.now())
            if stream.target.counts_global:
                self._global.release(self.now())
            self.kick()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
