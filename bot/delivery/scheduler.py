"""Pacing every reply's requests so a platform's rate limits are spent well and never exceeded.

One `Scheduler` per adapter owns every budget, keyed by scope ("channel:123",
"update:T1", ...); the adapter's `limits(scope)` says what each scope allows. Replies
mark themselves dirty as text arrives; the scheduler grants their next step by
priority (final text, first text, overflow, growth, indicator) whenever every budget
the step spends allows it:

- a final update takes any free request;
- a reply shows partial text only when its final update is already covered: where a
  scope `reserve_finals`, one request is kept for the final of every reply that shows
  partial text (so a finished answer never waits behind growth);
- growth leaves those reserved requests plus the scope's `growth_keep`, and where
  `spread_growth` comes no sooner than the budget's sustainable interval;
- the working indicator is a courtesy, only from what growth would leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot import metrics
from bot.delivery.budget import Budget
from bot.delivery.plan import Kind, Priority, Step
from bot.delivery.reply import Reply
from bot.delivery.surface import Refused, Surface
from bot.errors import CredentialRefused
from bot.journal import Journal

log = logging.getLogger("teambot.delivery")

IDLE_WAKE_S = 60.0
INDICATE = Step(Kind.INDICATE, Priority.INDICATE)
PRUNE_OVER = 512  # budgets kept before idle ones are forgotten
ACTIONS = {  # what a step was doing, for the log line when a platform refuses it
    Kind.POST: "posting a reply",
    Kind.EDIT: "editing a reply",
    Kind.DELETE: "deleting part of a reply",
    Kind.START: "starting a streamed reply",
    Kind.APPEND: "streaming a reply",
    Kind.STOP: "finishing a streamed reply",
    Kind.ABANDON: "ending a streamed reply",
    Kind.INDICATE: "showing that the bot is working",
}


@dataclass(frozen=True)
class Limit:
    """How one scope's budget may be spent (see the module docstring)."""

    budget: Callable[[], Budget]
    reserve_finals: bool = False
    growth_keep: int = 0
    spread_growth: bool = False
    indicate_keep: int = 0


class Scheduler:
    def __init__(self, limits: Callable[[str], Limit]) -> None:
        self._limits = limits
        # Where replies in progress are recorded (bot/journal.py); set by the adapter.
        self.journal: Journal | None = None
        self._replies: set[Reply] = set()
        self._budgets: dict[str, tuple[Limit, Budget]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._owed: Counter[str] = Counter()
        self._waiting_first = 0
        # First and final updates held back by budgets, since when (for the metrics).
        self._held: dict[Reply, float] = {}
        self._platform = metrics.platform_of(limits)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def open(self, surface: Surface, notes: Sequence[str] = ()) -> Reply:
        reply = Reply(surface, notes, self.now, self.kick)
        self._replies.add(reply)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="delivery-scheduler")
        self.kick()
        return reply

    def kick(self) -> None:
        self._wake.set()

    def idle(self) -> bool:
        """No reply is still streaming or landing."""
        return all(r.closed.is_set() and not r.inflight for r in self._replies)

    async def drain(self) -> None:
        """Until every finished reply has landed its final text."""
        await asyncio.gather(*(r.closed.wait() for r in self._replies if r.view.final))

    async def close(self) -> None:
        for reply in list(self._replies):
            reply.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in list(self._jobs):
            job.cancel()

    def budget(self, scope: str) -> tuple[Limit, Budget]:
        found = self._budgets.get(scope)
        if found is None:
            limit = self._limits(scope)
            found = self._budgets[scope] = (limit, limit.budget())
        return found

    # The loop

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = self._grant(self.now())
            except Exception:
                # A bug here must not strand every reply in flight; log it and go on.
                log.exception("reply pacing failed")
                delay = 0.5
            if len(self._budgets) > PRUNE_OVER or (delay is None and not self._replies):
                self._prune()
            if delay is None and not self._replies:
                delay = IDLE_WAKE_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _grant(self, now: float) -> float | None:
        """Start every step the budgets allow now; return how long until the next may go.

        None means nothing is due until a reply changes or a request completes.
        """
        waiting: list[tuple[Priority, float, Reply, Step]] = []
        self._owed = Counter()
        self._waiting_first = 0
        for reply in list(self._replies):
            if reply.closed.is_set() and not reply.inflight:
                self._replies.discard(reply)
                self._held.pop(reply, None)
                continue
            self._owed.update(reply.owes)
            self._waiting_first += not reply.visible and not reply.closed.is_set()
            step = reply.next_step()
            if step is not None:
                waiting.append((step.priority, reply.since, reply, step))
            # While its text waits for budget, a reply may still say it is working.
            if (due := reply.indicator_due()) is not None:
                waiting.append((Priority.INDICATE, due, reply, INDICATE))
        waiting.sort(key=lambda item: (item[0], item[1]))
        wake = math.inf
        for _, _, reply, step in waiting:
            if reply.inflight:  # granted a more urgent step this round
                continue
            at = self._allowed_at(reply, step, now)
            if at > now and step.kind is Kind.START:
                # No budget to open a native stream: show the text by posts and edits instead.
                other = reply.without_stream()
                if other is not None and self._allowed_at(reply, other, now) <= now:
                    step, at = other, now
            if at <= now:
                self._start(reply, step, now)
            else:
                wake = min(wake, at)
                if step.priority < Priority.OVERFLOW:  # no courtesy interval: budget alone
                    self._held.setdefault(reply, now)
        return None if wake == math.inf else max(0.0, wake - now)

    def _allowed_at(self, reply: Reply, step: Step, now: float) -> float:
        surface = reply.surface
        at = now
        if step.kind is Kind.INDICATE:
            at = reply.indicated_at + surface.indicate_every
        elif step.priority >= Priority.OVERFLOW:
            at = reply.last_write + surface.edit_interval
        scopes = surface.scopes(step.kind)
        for scope in scopes:
            limit, budget = self.budget(scope)
            at = max(at, budget.free_at(now, self._keep(reply, step, scope, limit)))
            if limit.spread_growth and Priority.OVERFLOW <= step.priority < Priority.INDICATE:
                at = max(at, budget.last() + budget.interval)
        if step.priority is Priority.FIRST:
            # Going live: the final update's budget must cover it and every live reply.
            final = surface.scopes(_final_kind(step))
            for scope in final:
                limit, budget = self.budget(scope)
                if limit.reserve_finals and scope not in scopes:
                    at = max(at, budget.free_at(now, self._owed[scope]))
        return at

    def _keep(self, reply: Reply, step: Step, scope: str, limit: Limit) -> int:
        """How many requests `step` must leave unspent in `scope`."""
        owed = self._owed[scope] if limit.reserve_finals else 0
        if step.priority is Priority.FINAL:
            return 0
        if step.priority is Priority.FIRST:
            # Its own final will come from here too once it shows text.
            return owed + 1 if limit.reserve_finals else 0
        if step.priority is Priority.INDICATE:
            return owed + limit.indicate_keep + self._waiting_first
        return owed + limit.growth_keep

    def _start(self, reply: Reply, step: Step, now: float) -> None:
        held = self._held.pop(reply, None) if step.priority < Priority.OVERFLOW else None
        if held is not None:
            metrics.rate_limit_wait(self._platform, now - held)
        scopes = reply.surface.scopes(step.kind)
        for scope in scopes:
            self.budget(scope)[1].acquire(now)
        if step.priority is Priority.FIRST:
            # Live from now on: later grants, this round too, must leave its final alone.
            reply.owes = tuple(reply.surface.scopes(_final_kind(step)))
            self._owed.update(reply.owes)
        reply.inflight = True
        self._spawn(self._perform(reply, step, scopes))

    async def _perform(self, reply: Reply, step: Step, scopes: Sequence[str]) -> None:
        try:
            await reply.perform(step)
        except Refused as exc:
            # Expected in a channel the bot may not use: one line, no traceback; a refused
            # token refuses everything, so that is said once a minute.
            if not isinstance(exc, CredentialRefused) or exc.due():
                log.warning("%s; the reply stops there", exc.line(ACTIONS[step.kind]))
            reply.stop(exc.code, exc)
        except Exception:
            log.exception("reply update failed")
            reply.stop("bug")
        finally:
            reply.inflight = False
            now = self.now()
            for scope in scopes:
                self.budget(scope)[1].release(now)
            self.kick()

    def _prune(self) -> None:
        """Forget idle budgets (one per channel and per interaction ever answered)."""
        now = self.now()
        self._budgets = {
            scope: (limit, budget)
            for scope, (limit, budget) in self._budgets.items()
            if budget.available(now) < budget.limit
        }

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)


def _final_kind(step: Step) -> Kind:
    """The request that will finish a reply that `step` makes live."""
    return Kind.STOP if step.kind is Kind.START else Kind.EDIT
