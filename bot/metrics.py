"""Prometheus metrics, and the `/metrics` and `/healthz` server of `TEAMBOT_METRICS_PORT`.

The rest of the code calls the plain functions here (one line per hook); recording
costs a dictionary lookup and an addition, so they run whether or not anything scrapes.
Labels are low-cardinality on purpose: platforms, outcomes, call kinds, error class
names and tool names, never a user, channel or conversation id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from bot.config import BUILTIN_TOOLS
from bot.errors import ModelError
from bot.model import Finished, ModelClient, ModelEvent, ModelRequest, ToolCall
from bot.types import Usage

log = logging.getLogger("teambot.metrics")

HOST = "0.0.0.0"  # container scrapers reach the pod's address, not its loopback
DATABASE_TIMEOUT_S = 2.0

REGISTRY = CollectorRegistry()
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

REPLIES = Counter(
    "teambot_replies",
    "Replies finished, by platform and outcome (ok, cut_off, bug, or the error's class).",
    ["platform", "outcome"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "teambot_replies_in_flight", "Replies being written right now.", registry=REGISTRY
)
LATENCY = Histogram(
    "teambot_model_latency_seconds",
    "One model request, from sending it to its last event, by kind of call.",
    ["kind"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
    registry=REGISTRY,
)
FIRST_TOKEN = Histogram(
    "teambot_model_first_token_seconds",
    "One model request, from sending it to its first token (retries included), by kind.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
    registry=REGISTRY,
)
TOKENS = Counter(
    "teambot_model_tokens",
    "Tokens the model calls used, by direction (input, output, cached: the part of input"
    " served from the prompt cache) and kind of call.",
    ["direction", "kind"],
    registry=REGISTRY,
)
COST = Counter(
    "teambot_model_cost_usd",
    "What the model calls cost at list price, in US dollars, by kind of call.",
    ["kind"],
    registry=REGISTRY,
)
MODEL_ERRORS = Counter(
    "teambot_model_errors",
    "Model requests that failed, by error class (after the client's retries).",
    ["error"],
    registry=REGISTRY,
)
RATE_LIMIT_WAITS = Counter(
    "teambot_ratelimit_waits",
    "Reply updates (first text or final answer) held back by a platform's rate limits.",
    ["platform"],
    registry=REGISTRY,
)
RATE_LIMIT_SECONDS = Counter(
    "teambot_ratelimit_wait_seconds",
    "Seconds those updates waited for the platform's rate-limit budget.",
    ["platform"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "teambot_tool_calls",
    "Tool calls run, by tool (built-ins by name, 'mcp' for MCP servers') and outcome.",
    ["tool", "outcome"],
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "teambot_model_breaker_open",
    "1 while the model endpoint's circuit breaker is open (calls fail at once), else 0.",
    ["endpoint"],
    registry=REGISTRY,
)
BREAKER_REJECTED = Counter(
    "teambot_model_breaker_rejected",
    "Model calls the open circuit breaker answered at once instead of sending them.",
    ["endpoint"],
    registry=REGISTRY,
)


# Recording


@contextlib.contextmanager
def replying(platform: str) -> Iterator[None]:
    """Around one reply: counts it in flight, and as a bug if it raises."""
    IN_FLIGHT.inc()
    try:
        yield
    except Exception:
        REPLIES.labels(platform, "bug").inc()
        raise
    finally:
        IN_FLIGHT.dec()


def reply_done(platform: str, outcome: str) -> None:
    REPLIES.labels(platform, outcome).inc()


def model_call(kind: str, usage: Usage, cost_usd: float) -> None:
    """One model call's usage, and its timing when `TimedModel` measured it."""
    TOKENS.labels("input", kind).inc(usage.prompt_tokens)
    TOKENS.labels("output", kind).inc(usage.completion_tokens)
    TOKENS.labels("cached", kind).inc(min(usage.cached_tokens, usage.prompt_tokens))
    COST.labels(kind).inc(cost_usd)
    timing = _last_call.get()
    if timing is not None:
        _last_call.set(None)  # each call's timing is observed once
        LATENCY.labels(kind).observe(timing.total)
        if timing.first is not None:
            FIRST_TOKEN.labels(kind).observe(timing.first)


def tools_ran(
    calls: Sequence[ToolCall], results: Sequence[str], offered: Mapping[str, Any]
) -> None:
    """A round of tool calls and their results ("Error: …" results are failures)."""
    for call, result in zip(calls, results, strict=False):
        if call.name in BUILTIN_TOOLS:
            tool = call.name
        else:
            tool = "mcp" if call.name in offered else "unknown"
        TOOL_CALLS.labels(tool, "error" if result.startswith("Error:") else "ok").inc()


def breaker_state(endpoint: str, is_open: bool) -> None:
    BREAKER_OPEN.labels(endpoint).set(1 if is_open else 0)


def breaker_rejected(endpoint: str) -> None:
    BREAKER_REJECTED.labels(endpoint).inc()


def rate_limit_wait(platform: str, seconds: float) -> None:
    RATE_LIMIT_WAITS.labels(platform).inc()
    RATE_LIMIT_SECONDS.labels(platform).inc(max(0.0, seconds))


def platform_of(thing: object) -> str:
    """The platform an adapter's object belongs to, from its module (adapters.<platform>.…)."""
    parts = getattr(thing, "__module__", "").split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "adapters" else "other"


# Timing model calls


@dataclass(frozen=True)
class _Timing:
    total: float
    first: float | None


# The last model call's timing in this task, until its usage is recorded (`model_call`),
# which is where the kind of call is known. An async generator runs in the context of
# the task iterating it, so what `TimedModel.stream` sets is seen by that task.
_last_call: ContextVar[_Timing | None] = ContextVar("teambot_last_model_call", default=None)


class TimedModel:
    """A `ModelClient` that times each stream and counts its errors."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner
        self.model = inner.model

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        started = time.perf_counter()
        first: float | None = None
        _last_call.set(None)
        try:
            async for event in self.inner.stream(request):
                if first is None and not isinstance(event, Finished):
                    first = time.perf_counter() - started
                yield event
        except ModelError as exc:
            MODEL_ERRORS.labels(type(exc).__name__).inc()
            raise
        finally:
            _last_call.set(_Timing(time.perf_counter() - started, first))

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# Serving


class Connectable(Protocol):
    @property
    def connected(self) -> bool: ...


class Database(Protocol):
    async def get_meta(self, name: str) -> str | None: ...


async def health(adapters: Sequence[Connectable], database: Database) -> str:
    """Empty when every adapter is connected and the database answers; else one line why."""
    problems = [f"{platform_of(item)}: not connected" for item in adapters if not item.connected]
    try:
        # A trivial query through the store, so it also proves the pool or worker works.
        await asyncio.wait_for(database.get_meta("health"), DATABASE_TIMEOUT_S)
    except TimeoutError:
        problems.append(f"database: no answer within {DATABASE_TIMEOUT_S:g} s")
    except Exception as exc:
        problems.append(f"database: {type(exc).__name__}")
    return "; ".join(problems)


def application(check: Callable[[], Awaitable[str]]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        problem = await check()
        return web.Response(status=503 if problem else 200, text=(problem or "ok") + "\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(port: int, check: Callable[[], Awaitable[str]], host: str = HOST) -> None:
    """Serve `/metrics` and `/healthz` on `port` until cancelled."""
    runner = web.AppRunner(application(check), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise RuntimeError(
                f"TEAMBOT_METRICS_PORT: cannot listen on port {port} ({exc.strerror})"
            ) from None
        log.info("metrics and health on http://%s:%d/metrics and /healthz", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serving(
    port: int | None,
    adapters: Sequence[Connectable],
    database: Database,
) -> list[asyncio.Task[None]]:
    """The metrics server's task when `port` is set (none otherwise), for `teambot run`."""
    if port is None:
        return []
    check = functools.partial(health, adapters, database)
    return [asyncio.create_task(serve(port, check), name="metrics")]
