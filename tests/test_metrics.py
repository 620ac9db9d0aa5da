"""TEAMBOT_METRICS_PORT: /metrics and /healthz scraped over HTTP from a real `teambot run`,
and the recording hooks driven through the real engine, adapter and model client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.config import load_settings
from bot.engine import Engine
from bot.errors import ConfigError
from bot.mistral import MistralClient
from bot.store.sqlite import SQLiteStore
from bot.types import ReplyFailed
from tests.conftest import test_settings as settings_on
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import dc
from tests.fakes.discord.harness import settings_for, start_adapter
from tests.fakes.discord.server import BOT_TOKEN
from tests.fakes.mistral import Error, FakeMistral, Reply, ToolCall, error_body
from tests.fakes.slack.fixtures import fake_slack_fixture
from tests.fakes.slack.harness import Harness
from tests.fakes.slack.server import FakeSlack
from tests.helpers import collect, final, message
from tests.test_cli import cli_env

__all__ = ["dc", "fake_slack_fixture"]  # fixtures
pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_get(url: str) -> tuple[int, str] | None:
    """Status and body, or None while nothing listens there."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientConnectionError:
        return None


async def until(probe: Callable[[], Any], what: str, limit: float = 40.0) -> Any:
    """Poll `probe` (sync or async) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        found = probe()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(port: int) -> Samples:
    got = await http_get(f"http://127.0.0.1:{port}/metrics")
    assert got is not None and got[0] == 200, got
    return parse(got[1])


async def healthz(port: int, status: int) -> str | None:
    """The body of /healthz once it answers with `status`."""
    got = await http_get(f"http://127.0.0.1:{port}/healthz")
    return got[1] if got is not None and got[0] == status else None


def discord_env(model: FakeMistral, discord: FakeDiscord, tmp_path: Path, **extra: str):
    return cli_env(
        model,
        tmp_path,
        DISCORD_BOT_TOKEN=BOT_TOKEN,
        DISCORD_API_BASE_URL=discord.api_base_url,
        DISCORD_GATEWAY_URL=discord.gateway_url,
        **extra,
    )


@contextlib.asynccontextmanager
async def running(
    env: dict[str, str],
    cwd: Path,
    command: Sequence[str] = (sys.executable, "-m", "bot.cli", "run"),
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`teambot run` as a subprocess; stopped with SIGTERM (killed if it hangs) on the way out."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.communicate(), 15)
            except TimeoutError:
                process.kill()
                await process.communicate()


async def test_one_reply_moves_the_metrics_and_healthz_follows_the_gateway(tmp_path: Path):
    async with FakeMistral() as model:
        discord = FakeDiscord()
        discord.outage_logins = 1_000_000  # Discord is down until the test says otherwise
        await discord.start()
        port = free_port()
        env = discord_env(model, discord, tmp_path, TEAMBOT_METRICS_PORT=str(port))
        try:
            async with running(env, tmp_path) as process:
                down = await until(lambda: healthz(port, 503), "/healthz to answer 503")
                assert down == "discord: not connected\n"
                before = await scrape(port)
                discord.outage_logins = 0
                assert await until(lambda: healthz(port, 200), "/healthz 200", 60) == "ok\n"

                question = await discord.user_message(
                    discord.general, discord.alice, "how are the metrics?", mention=True
                )

                async def replied() -> Samples | None:
                    now = await scrape(port)
                    done = value(now, "teambot_replies_total", platform="discord", outcome="ok")
                    return now if done > 0 else None

                after = await until(replied, "the reply to be counted")
                await until(lambda: discord.replies_to(question["id"]), "the reply on Discord")
                process.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(process.communicate(), 15)
                assert process.returncode == 0, err.decode()[-2000:]
        finally:
            await discord.close()

    with sqlite3.connect(tmp_path / "cli.db") as db:
        prompt, completion, cost = db.execute(
            "SELECT prompt_tokens, completion_tokens, cost_usd FROM usage WHERE kind = 'reply'"
        ).fetchone()
    assert prompt > 0 and completion > 0

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("teambot_replies_total", platform="discord", outcome="ok") == 1
    assert moved("teambot_model_tokens_total", direction="input", kind="reply") == prompt
    assert moved("teambot_model_tokens_total", direction="output", kind="reply") == completion
    assert moved("teambot_model_cost_usd_total", kind="reply") == pytest.approx(cost)
    assert moved("teambot_model_latency_seconds_count", kind="reply") == 1
    assert moved("teambot_model_latency_seconds_sum", kind="reply") > 0
    assert moved("teambot_model_first_token_seconds_count", kind="reply") == 1
    assert value(after, "teambot_replies_in_flight") == 0
    assert value(after, "process_resident_memory_bytes") > 0  # the process collector is on
    # Labels never carry a user, channel or conversation id.
    for name, labels in after:
        for label, text in labels:
            assert discord.alice not in text and discord.general not in text, (name, label)


def postgres_admin_url() -> str:
    return os.environ.get("TEAMBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def admin(sql: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_admin_url(), autocommit=True) as conn:
        await conn.execute(sql)  # type: ignore[arg-type]


async def test_healthz_names_the_database_when_postgresql_goes_away(tmp_path: Path):
    name = f"teambot_health_{uuid.uuid4().hex[:10]}"
    try:
        await admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # no server here: say so rather than fail
        pytest.skip(f"PostgreSQL not reachable at {postgres_admin_url()}: {exc}")
    url = postgres_admin_url().rsplit("/", 1)[0] + f"/{name}"
    try:
        async with FakeMistral() as model:
            discord = FakeDiscord()
            await discord.start()
            port = free_port()
            env = discord_env(
                model, discord, tmp_path, TEAMBOT_METRICS_PORT=str(port), DATABASE_URL=url
            )
            try:
                async with running(env, tmp_path):
                    assert await until(lambda: healthz(port, 200), "/healthz 200", 60) == "ok\n"
                    await admin(f'DROP DATABASE "{name}" WITH (FORCE)')
                    reason = await until(lambda: healthz(port, 503), "/healthz 503")
                    assert reason.startswith("database: ") and reason.count("\n") == 1, reason
                    assert "discord" not in reason  # the gateway is still up
            finally:
                await discord.close()
    finally:
        with contextlib.suppress(Exception):
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_metrics_port_in_use_stops_the_bot_with_one_clear_line(tmp_path: Path):
    async with FakeMistral() as model:
        discord = FakeDiscord()
        await discord.start()
        with socket.socket() as taken:
            taken.bind(("0.0.0.0", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = discord_env(model, discord, tmp_path, TEAMBOT_METRICS_PORT=str(port))
            try:
                async with running(env, tmp_path) as process:
                    _, err = await asyncio.wait_for(process.communicate(), 30)
            finally:
                await discord.close()
    assert process.returncode == 1
    assert f"TEAMBOT_METRICS_PORT: cannot listen on port {port}" in err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize("raw", ["abc", "0", "70000", "-1"])
def test_a_bad_metrics_port_is_a_one_line_config_error(raw: str):
    with pytest.raises(ConfigError) as caught:
        load_settings({"TEAMBOT_METRICS_PORT": raw})
    assert caught.value.variable == "TEAMBOT_METRICS_PORT"
    assert load_settings({}).metrics_port is None  # off by default
    assert load_settings({"TEAMBOT_METRICS_PORT": "9464"}).metrics_port == 9464


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def timed_engine(fake: FakeMistral, tmp_path: Path) -> Engine:
    """An engine on a SQLite file whose model client is timed, as `teambot run` builds it."""
    settings = settings_on(fake, tmp_path / "teambot.db", metrics_port=9464)
    store = await SQLiteStore.open(settings.database_url.removeprefix("sqlite:///"))
    client = MistralClient(
        api_key=settings.mistral_api_key,
        base_url=settings.mistral_base_url,
        model=settings.model,
        retry_budget=1.0,
    )
    engine = Engine(settings, store, metrics.TimedModel(client))
    await engine.start()
    return engine


async def test_tool_calls_rounds_and_model_errors_are_counted(
    fake_mistral: FakeMistral, tmp_path: Path
):
    engine = await timed_engine(fake_mistral, tmp_path)
    try:
        names = [("current_time", "ok"), ("unknown", "error")]
        tools_before = [sample("teambot_tool_calls_total", tool=t, outcome=o) for t, o in names]
        rounds_before = sample("teambot_model_latency_seconds_count", kind="tool_round")
        errors_before = sample("teambot_model_errors_total", error="ModelAuthError")
        failed_before = sample("teambot_replies_total", platform="test", outcome="ModelAuthError")
        fake_mistral.enqueue(
            ToolCall("current_time", {}),
            ToolCall("no_such_tool", {}),
            Reply("It is late."),
            Error(401, error_body("Unauthorized", "invalid_request_error")),
        )
        answered = final(await collect(engine, message("what time is it?")))
        assert answered.text == "It is late."
        failed = final(await collect(engine, message("and now?")))
        assert isinstance(failed, ReplyFailed) and "rejected" in failed.notice

        tools_after = [sample("teambot_tool_calls_total", tool=t, outcome=o) for t, o in names]
        assert [a - b for a, b in zip(tools_after, tools_before, strict=True)] == [1, 1]
        assert sample("teambot_model_latency_seconds_count", kind="tool_round") == (
            rounds_before + 2
        )
        assert sample("teambot_model_errors_total", error="ModelAuthError") == errors_before + 1
        assert (
            sample("teambot_replies_total", platform="test", outcome="ModelAuthError")
            == failed_before + 1
        )
        assert sample("teambot_replies_in_flight") == 0
    finally:
        await engine.aclose()


async def test_health_reasons_come_from_the_real_adapter_and_store(
    engine: Engine, dc: FakeDiscord, tmp_path: Path
):
    from adapters.discord import DiscordAdapter

    idle = DiscordAdapter(engine, settings_for(dc))  # never started: not connected
    assert await metrics.health([idle], engine.store) == "discord: not connected"
    running_bot = await start_adapter(engine, dc)
    try:
        await until(lambda: running_bot.adapter.connected, "the adapter to say connected")
        assert await metrics.health([running_bot.adapter], engine.store) == ""
    finally:
        await running_bot.stop()
    assert not running_bot.adapter.connected
    store = await SQLiteStore.open(str(tmp_path / "closed.db"))
    await store.aclose()
    reason = await metrics.health([], store)
    assert reason.startswith("database: ") and reason != "database: "


async def test_replies_held_by_discords_rate_limits_are_counted(
    engine: Engine, dc: FakeDiscord, fake_mistral: FakeMistral
):
    fake_mistral.token_interval = 0.01
    fake_mistral.default_tokens = 20
    waits_before = sample("teambot_ratelimit_waits_total", platform="discord")
    seconds_before = sample("teambot_ratelimit_wait_seconds_total", platform="discord")
    bot = await start_adapter(engine, dc)
    try:
        # Seven questions in one channel: one after the other they need more than the
        # channel's 5 requests per 5 s, so some reply's first or final text must wait.
        for i in range(7):
            await dc.user_message(dc.general, dc.alice, f"count me {i}", mention=True)
        await until(
            lambda: sample("teambot_ratelimit_waits_total", platform="discord") > waits_before,
            "a reply held back by the rate limits",
        )
    finally:
        await bot.stop()
    assert sample("teambot_ratelimit_wait_seconds_total", platform="discord") > seconds_before
    assert dc.rate_limited == 0  # held back by us, never refused by Discord


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_slack_says_connected_while_events_can_arrive(
    engine: Engine, fake_slack: FakeSlack, mode: str
):
    harness = Harness(fake_slack, engine, mode=mode)
    adapter = await harness.start()
    try:
        await until(lambda: adapter.connected, "the Slack adapter to say connected")
        assert await metrics.health([adapter], engine.store) == ""
        if mode == "socket":  # a dropped socket is reconnected, and reported again
            await fake_slack.hub.drop()
            await until(lambda: len(fake_slack.hub.connections) == 1, "a new socket")
            await until(lambda: adapter.connected, "connected again")
    finally:
        await harness.stop()
    assert not adapter.connected
    assert await metrics.health([adapter], engine.store) == "slack: not connected"
