"""A circuit breaker per model endpoint, shared by every conversation of the process.

Without it, a model that is down costs every conversation the client's whole retry
budget (about 20 s and ten requests each), all aimed at a service that is down. With it:

- **closed** (normal): calls go through. After `THRESHOLD` consecutive failed calls
  (`ModelUnavailable`: 5xx, timeouts, refused connections) it opens. A call counts once
  however many times the client retries it, but it counts at its first failed request,
  not after its retries, so a burst of conversations opens the breaker at once. Once a
  failure has been seen, a new call retries for `SHORT_RETRY_S` at most instead of the
  client's whole budget.
- **open**: calls fail at once with `ModelCircuitOpen` (one sentence saying the model
  will be tried again shortly), and calls still retrying stop at their next retry. One
  real call per cool-down goes through as the probe, with no retries; the cool-down
  starts at 2 s and doubles after each failed probe, up to 30 s. The probe's first event
  (or any other answer from the server) closes the breaker, and that question is answered.

429s keep the client's Retry-After handling and count neither way; other 4xx answers prove
the endpoint is up and count as successes. Probes are real questions, not synthetic
requests: with nobody asking, the breaker stays open until the next question after the
cool-down.

The breaker is per process. Several bot processes on one endpoint each keep their own; that
is enough for what it is for (sparing the endpoint, telling people at once), so they do not
coordinate. It works with any `ModelClient`; a client with a `retry_gate` attribute (every
client built on `bot.mistral.MistralClient`) lets it see and stop individual retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from bot import metrics
from bot.errors import (
    ContextTooLong,
    ModelAuthError,
    ModelBadRequest,
    ModelCircuitOpen,
    ModelError,
    ModelUnavailable,
)
from bot.model import ModelClient, ModelEvent, ModelRequest

log = logging.getLogger("teambot.breaker")

THRESHOLD = 5  # consecutive failed calls that open the breaker
FIRST_COOLDOWN_S = 2.0
MAX_COOLDOWN_S = 30.0
SHORT_RETRY_S = 3.0  # a call's retry budget once the endpoint has failed
# Errors that are answers from a working server: the endpoint is up.
ANSWERS = (ModelAuthError, ModelBadRequest, ContextTooLong)

Clock = Callable[[], float]


@runtime_checkable
class RetryGated(Protocol):
    """A client that asks before each retry (see `bot.mistral.RetryGate`)."""

    retry_gate: Callable[[ModelError], bool] | None


@dataclass
class Call:
    """One `stream()` call as the breaker sees it, across the client's retries."""

    probe: bool  # the one call let through while open: no retries
    suspect: bool  # admitted after a failure: retries for SHORT_RETRY_S at most
    started: float
    counted: bool = False  # its failure has been counted
    answered: bool = False  # the server answered it
    stopped: bool = False  # the breaker ended its retries


# The call the current task is streaming, for the client's retry gate: an async generator
# runs in the context of the task iterating it, so the gate sees what `stream` set.
_current: ContextVar[Call | None] = ContextVar("teambot_breaker_call", default=None)


def is_outage(error: ModelError) -> bool:
    return isinstance(error, ModelUnavailable) and not isinstance(error, ModelCircuitOpen)


def endpoint_label(url: str) -> str:
    """The endpoint's URL without credentials, query or fragment: safe for logs and labels."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}" if host else "(unknown)"


class CircuitBreaker:
    """The state of one endpoint's breaker; `GuardedModel` drives it around each call."""

    def __init__(
        self,
        endpoint: str,
        *,
        threshold: int = THRESHOLD,
        first_cooldown: float = FIRST_COOLDOWN_S,
        max_cooldown: float = MAX_COOLDOWN_S,
        short_retry: float = SHORT_RETRY_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.endpoint = endpoint_label(endpoint)
        self.threshold = threshold
        self.first_cooldown = first_cooldown
        self.max_cooldown = max_cooldown
        self.short_retry = short_retry
        self._clock = clock
        self.failures = 0  # consecutive failed calls
        self.opened_at: float | None = None
        self.cooldown = first_cooldown
        self.next_probe = 0.0
        self.probing = False
        self.rejected = 0
        metrics.breaker_state(self.endpoint, False)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def describe(self) -> str:
        """One line for `teambot check` and logs."""
        if not self.is_open:
            seen = f", {self.failures} failed call(s) in a row" if self.failures else ""
            return f"closed{seen}"
        wait = max(0.0, self.next_probe - self._clock())
        doing = "probing now" if self.probing else f"next probe in {wait:.0f} s"
        return f"open for {self._clock() - (self.opened_at or 0):.0f} s, {doing}"

    # -- around one call ---------------------------------------------------------------

    def admit(self) -> Call:
        """A call may go out, as a normal call or as the probe; else `ModelCircuitOpen`."""
        now = self._clock()
        if not self.is_open:
            return Call(probe=False, suspect=self.failures > 0, started=now)
        if self.probing or now < self.next_probe:
            self.rejected += 1
            metrics.breaker_rejected(self.endpoint)
            raise ModelCircuitOpen(f"circuit breaker open for {self.endpoint}")
        self.probing = True
        log.info("model at %s: probing whether it is back", self.endpoint)
        return Call(probe=True, suspect=True, started=now)

    def answered(self, call: Call) -> None:
        """The server answered the call: the endpoint works."""
        if call.answered:
            return
        call.answered = True
        self.failures = 0
        if call.probe:
            self.probing = False
        if self.is_open:
            self._close()

    def failed(self, call: Call, error: ModelError) -> None:
        """One of the call's requests failed with `error` (called per attempt and at the end)."""
        if isinstance(error, ANSWERS):
            self.answered(call)
        elif is_outage(error) and not call.counted:
            call.counted = True
            self.failures += 1
            if call.probe:
                self._probe_failed(error)
            elif not self.is_open and self.failures >= self.threshold:
                self._open(error)

    def finished(self, call: Call) -> None:
        """The call is over; a probe that ended without a verdict (a 429, a cancellation)
        gives its turn back at the same cool-down."""
        if call.probe and self.probing and not call.answered and not call.counted:
            self.probing = False
            self.next_probe = self._clock() + self.cooldown

    def may_retry(self, error: ModelError) -> bool:
        """The client's retry gate: whether the current call may send another request."""
        call = _current.get()
        if call is None:
            return not self.is_open
        self.failed(call, error)
        if call.probe:
            return False
        if self.is_open:
            call.stopped = True
            return False
        spent = self._clock() - call.started
        return not (call.suspect and is_outage(error) and spent >= self.short_retry)

    # -- state changes -----------------------------------------------------------------

    def _open(self, error: ModelError) -> None:
        now = self._clock()
        self.opened_at = now
        self.cooldown = self.first_cooldown
        self.next_probe = now + self.cooldown
        metrics.breaker_state(self.endpoint, True)
        log.warning(
            "model at %s: circuit breaker open after %d failed calls in a row (last: %s); "
            "questions are told at once, one probe every %g to %g s",
            self.endpoint,
            self.failures,
            error,
            self.first_cooldown,
            self.max_cooldown,
        )

    def _probe_failed(self, error: ModelError) -> None:
        self.probing = False
        self.cooldown = min(self.cooldown * 2, self.max_cooldown)
        self.next_probe = self._clock() + self.cooldown
        log.info(
            "model at %s: probe failed (%s); next in %g s", self.endpoint, error, self.cooldown
        )

    def _close(self) -> None:
        down = self._clock() - (self.opened_at or 0)
        self.opened_at = None
        self.cooldown = self.first_cooldown
        metrics.breaker_state(self.endpoint, False)
        log.warning(
            "model at %s: answering again; circuit breaker closed after %.0f s (%d calls told)",
            self.endpoint,
            down,
            self.rejected,
        )


class GuardedModel:
    """A `ModelClient` that sends every call of `inner` through `breaker`."""

    def __init__(self, inner: ModelClient, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.model = inner.model
        if isinstance(inner, RetryGated):
            inner.retry_gate = breaker.may_retry

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        call = self.breaker.admit()
        _current.set(call)
        try:
            async for event in self.inner.stream(request):
                self.breaker.answered(call)
                yield event
        except ModelError as error:
            self.breaker.failed(call, error)
            if is_outage(error) and not call.answered and (call.stopped or call.probe):
                raise ModelCircuitOpen(f"{error} (circuit breaker open)") from error
            raise
        finally:
            _current.set(None)
            self.breaker.finished(call)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def guard(inner: ModelClient, endpoint: str) -> GuardedModel:
    """`inner` behind a new breaker for `endpoint` (one per process: see the module doc)."""
    return GuardedModel(inner, CircuitBreaker(endpoint))


# -- `teambot check` ---------------------------------------------------------------------

SCRAPE_TIMEOUT_S = 2.0
POLICY = (
    f"opens after {THRESHOLD} failed model calls in a row, then lets one question through "
    f"every {FIRST_COOLDOWN_S:g} to {MAX_COOLDOWN_S:g} s"
)


def gauge_values(exposition: str) -> list[float]:
    """The values of `teambot_model_breaker_open` in a Prometheus text exposition."""
    values: list[float] = []
    for line in exposition.splitlines():
        if line.startswith("teambot_model_breaker_open"):
            try:
                values.append(float(line.rsplit(maxsplit=1)[-1]))
            except ValueError:
                continue
    return values


async def running_state(port: int) -> bool | None:
    """Whether the breaker of the bot serving metrics on this machine's `port` is open;
    None when no bot answers there."""
    import httpx

    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S, trust_env=False) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return None
    values = gauge_values(response.text) if response.status_code == 200 else []
    return any(value >= 1 for value in values) if values else None


async def check_line(metrics_port: int | None) -> str:
    """`teambot check`'s line about the breaker: a running bot's state when its metrics
    are served on this machine, else how it behaves."""
    state = await running_state(metrics_port) if metrics_port else None
    if state is None:
        where = "" if metrics_port else "; set TEAMBOT_METRICS_PORT to see a running bot's"
        return f"- circuit breaker: no running bot to ask{where} (each process {POLICY})"
    if state:
        return f"✗ circuit breaker of the running bot: open, questions are told at once ({POLICY})"
    return f"✓ circuit breaker of the running bot: closed ({POLICY})"
