"""The model endpoint's circuit breaker (bot/breaker.py) through the real engine, the real
Mistral client and the fake Mistral server, and once end to end through the Discord fake."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot import metrics
from bot.breaker import CircuitBreaker, GuardedModel, check_line, endpoint_label
from bot.engine import Engine
from bot.errors import ModelCircuitOpen, ModelUnavailable
from bot.mistral import MistralClient
from bot.store.sqlite import SQLiteStore
from bot.types import ReplyDone, ReplyFailed
from tests.conftest import test_settings as settings_for
from tests.fakes.discord.fixtures import answer_to, bot, dc
from tests.fakes.discord.harness import Running
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.mistral import Error, FakeMistral, Reply, error_body
from tests.helpers import collect, final, key, message

__all__ = ["bot", "dc"]  # fixtures

CONVERSATIONS = 20
TOLD_WITHIN_S = 2.0  # the bound for telling an asker while the breaker is open


class DownMistral(FakeMistral):
    """FakeMistral that answers every request with 503 while `down` is set."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.down = True

    def _default_reply(self, body: dict[str, Any]) -> Any:
        if self.down:
            return Error(503, error_body("Service unavailable", "service_unavailable"))
        return super()._default_reply(body)


@pytest_asyncio.fixture
async def fake_mistral() -> AsyncIterator[DownMistral]:
    async with DownMistral() as fake:
        yield fake


@pytest_asyncio.fixture
async def engine(fake_mistral: DownMistral, tmp_path: Path) -> AsyncIterator[Engine]:
    """The production shape: the client with its default 20 s retry budget behind a breaker."""
    settings = settings_for(fake_mistral, tmp_path / "teambot.db")
    store = await SQLiteStore.open(str(tmp_path / "teambot.db"))
    client = MistralClient(settings.mistral_api_key, fake_mistral.base_url, settings.model)
    guarded = GuardedModel(client, CircuitBreaker(fake_mistral.base_url))
    built = Engine(settings, store, guarded, tool_sources=())
    await built.start()
    yield built
    await built.aclose()


def breaker_of(engine: Engine) -> CircuitBreaker:
    assert isinstance(engine.model, GuardedModel)
    return engine.model.breaker


async def ask(engine: Engine, index: int, text: str) -> tuple[ReplyDone | ReplyFailed, float]:
    """Ask in conversation `index`; the reply's last event and how long it took."""
    started = time.monotonic()
    done = final(await collect(engine, message(text, conv=key(f"C{index}"))))
    return done, time.monotonic() - started


def busiest_second(times: list[float]) -> int:
    """The most requests in any one-second window."""
    return max((sum(1 for t in times if start <= t < start + 1.0) for start in times), default=0)


def gauge(name: str, endpoint: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"endpoint": endpoint_label(endpoint)})


async def test_an_outage_opens_it_and_askers_are_told_at_once(
    engine: Engine, fake_mistral: DownMistral
) -> None:
    breaker = breaker_of(engine)
    first = await asyncio.gather(*(ask(engine, i, "first wave") for i in range(CONVERSATIONS)))
    assert breaker.is_open
    opened = time.perf_counter()
    # Nobody waited out the client's 20 s retry budget: every asker got the one sentence.
    for done, _ in first:
        assert isinstance(done, ReplyFailed) and done.notice == ModelCircuitOpen.user_message
    assert max(took for _, took in first) < TOLD_WITHIN_S

    # Seven seconds of every conversation asking again and again while it stays open.
    told: list[float] = []
    stop = time.monotonic() + 7.0

    async def keep_asking(index: int) -> None:
        while time.monotonic() < stop:
            done, took = await ask(engine, index, "still there?")
            assert isinstance(done, ReplyFailed)
            assert done.notice == ModelCircuitOpen.user_message
            assert len(done.notice.split(". ")) == 1  # one sentence
            told.append(took)
            await asyncio.sleep(0.2)

    await asyncio.gather(*(keep_asking(i) for i in range(CONVERSATIONS)))
    assert len(told) > CONVERSATIONS * 10
    assert max(told) < TOLD_WITHIN_S
    after = [t for t in fake_mistral.request_times if t > opened]
    assert 1 <= len(after) <= 3  # the probes: at 2 s, then 4 s later
    assert busiest_second(after) <= 1
    assert breaker.cooldown == 8.0  # each failed probe doubled it
    assert gauge("teambot_model_breaker_open", fake_mistral.base_url) == 1
    rejected = gauge("teambot_model_breaker_rejected_total", fake_mistral.base_url)
    assert rejected is not None and rejected >= len(told) - len(after)

    # The model is back: the first question once a probe is due is answered, and closes it.
    fake_mistral.down = False
    await asyncio.sleep(max(0.0, breaker.next_probe - time.monotonic()))
    done, _ = await ask(engine, 0, "back now?")
    # The unanswered questions before it are merged into the one user turn it echoes.
    assert isinstance(done, ReplyDone) and done.text.endswith("back now?")
    assert not breaker.is_open and breaker.cooldown == 2.0
    assert gauge("teambot_model_breaker_open", fake_mistral.base_url) == 0
    others = await asyncio.gather(*(ask(engine, i, "and me?") for i in range(1, 5)))
    assert all(isinstance(done, ReplyDone) for done, _ in others)


async def test_a_failed_call_counts_once_however_often_it_is_retried(
    fake_mistral: DownMistral,
) -> None:
    """Once the endpoint failed, a call retries for `short_retry` s instead of the client's
    whole budget; each call counts once. Two clients share the endpoint's one breaker."""
    breaker = CircuitBreaker(fake_mistral.base_url, short_retry=0.5)
    brief = GuardedModel(MistralClient("k", fake_mistral.base_url, "m", retry_budget=0.3), breaker)
    patient = GuardedModel(
        MistralClient("k", fake_mistral.base_url, "m", retry_budget=20.0, backoff_cap=0.2),
        breaker,
    )
    try:
        with pytest.raises(ModelUnavailable):
            await drain(brief)
        assert breaker.failures == 1
        for expected in (2, 3):
            before = len(fake_mistral.requests)
            with pytest.raises(ModelUnavailable) as raised:
                await drain(patient)
            assert not isinstance(raised.value, ModelCircuitOpen)
            assert breaker.failures == expected and not breaker.is_open
            made = len(fake_mistral.requests) - before
            assert 1 < made < 20  # it retried, but not for its 20 s budget (~100 requests)
    finally:
        await brief.aclose()
        await patient.aclose()


async def drain(model: GuardedModel, text: str = "hi") -> str:
    from bot.model import AnswerChunk, ModelRequest

    events = model.stream(ModelRequest(messages=[{"role": "user", "content": text}]))
    return "".join([e.text async for e in events if isinstance(e, AnswerChunk)])


async def test_rate_limits_keep_retry_after_and_do_not_open_it(
    engine: Engine, fake_mistral: DownMistral
) -> None:
    fake_mistral.down = False
    limited = Error(429, error_body("Rate limit exceeded", "rate_limited"), {"Retry-After": "0.3"})
    fake_mistral.enqueue(*[limited] * 8)
    done = await asyncio.gather(*(ask(engine, i, "busy?") for i in range(8)))
    assert all(isinstance(d, ReplyDone) for d, _ in done)
    breaker = breaker_of(engine)
    assert not breaker.is_open and breaker.failures == 0
    assert len(fake_mistral.requests) == 16  # each retried once, after its Retry-After


async def test_a_success_resets_the_count(engine: Engine, fake_mistral: DownMistral) -> None:
    breaker = breaker_of(engine)
    fake_mistral.down = False
    down = Error(503, error_body("down", "server_error"))
    for _ in range(3):  # three calls fail once each, then get answered on their retry
        fake_mistral.enqueue(down)
        done, _ = await ask(engine, 0, "hello")
        assert isinstance(done, ReplyDone)
        assert breaker.failures == 0 and not breaker.is_open


async def test_check_shows_the_running_bots_breaker(fake_mistral: DownMistral) -> None:
    port = free_port()
    assert (await check_line(None)).startswith("- circuit breaker: no running bot")
    assert (await check_line(port)).startswith("- circuit breaker: no running bot")
    server = asyncio.create_task(metrics.serve(port, _healthy, host="127.0.0.1"))
    breaker = CircuitBreaker(fake_mistral.base_url)
    try:
        await until_served(port)
        assert (await check_line(port)).startswith("✓ circuit breaker of the running bot: closed")
        metrics.breaker_state(breaker.endpoint, True)
        assert (await check_line(port)).startswith("✗ circuit breaker of the running bot: open")
    finally:
        metrics.breaker_state(breaker.endpoint, False)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_discord_asker_hears_one_sentence_while_open(
    bot: Running, dc: FakeDiscord, engine: Engine, fake_mistral: DownMistral
) -> None:
    await asyncio.gather(*(ask(engine, i, "open it") for i in range(5)))
    assert breaker_of(engine).is_open
    sent = len(fake_mistral.requests)
    msg = await dc.user_message(dc.general, dc.alice, "anyone there?", mention=True)
    assert await answer_to(bot, dc, msg) == ModelCircuitOpen.user_message
    assert len(fake_mistral.requests) == sent  # told without a model request
    fake_mistral.down = False
    fake_mistral.enqueue(Reply("I'm back."))
    breaker = breaker_of(engine)
    await asyncio.sleep(max(0.0, breaker.next_probe - time.monotonic()))
    again = await dc.user_message(dc.general, dc.alice, "now?", mention=True)
    assert await answer_to(bot, dc, again) == "I'm back."


async def _healthy() -> str:
    return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def until_served(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"metrics server on {port} did not start")
