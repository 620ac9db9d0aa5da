"""Mistral prompt caching and exact prices: a hashed `prompt_cache_key` per conversation,
cached tokens read from usage, stored with each call (both backends) and priced at the
cached rate in usage records, limits and `teambot usage`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from bot.accounting import LIST_PRICES, Prices, cost_usd
from bot.cli import _usage
from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.model import prompt_cache_key
from bot.store import Store, UsageRecord
from bot.store.sqlite import SQLiteStore
from bot.types import ReplyDone, Usage
from tests.fakes.mistral import FakeMistral, Reply
from tests.helpers import collect, final, key, message
from tests.test_store import place, store

__all__ = ["place", "store"]  # fixtures

LONG = "Here is some background that makes the prompt long enough to cache. " * 12


async def usage_rows(engine) -> list[dict]:
    return await engine.store._run(engine.store._rows, "SELECT * FROM usage ORDER BY id", [])


def test_cost_prices_cached_tokens_at_the_cached_rate() -> None:
    usage = Usage(prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=8_000)
    assert Prices(0.15, 0.60, 0.015) == LIST_PRICES
    expected = (2_000 * 0.15 + 8_000 * 0.015 + 1_000 * 0.60) / 1e6
    assert cost_usd(usage) == pytest.approx(expected)
    assert cost_usd(usage) < cost_usd(Usage(10_000, 1_000))
    assert cost_usd(usage, Prices(0, 0, 0)) == 0
    # A provider reporting more cached than prompt tokens is not believed past the prompt.
    assert cost_usd(Usage(100, 0, 500), Prices(1, 1, 0)) == 0


def test_prices_and_provider_settings() -> None:
    settings = load_settings(
        {"TEAMBOT_PRICE_INPUT": "0", "TEAMBOT_PRICE_OUTPUT": "$1.5", "TEAMBOT_PRICE_CACHED": "0"}
    )
    assert (settings.price_input, settings.price_output, settings.price_cached) == (0, 1.5, 0)
    defaults = load_settings({})
    assert (defaults.price_input, defaults.price_output, defaults.price_cached) == (
        0.15,
        0.60,
        0.015,
    )
    assert defaults.provider == "mistral"
    for env, variable in (
        ({"TEAMBOT_PRICE_INPUT": "-1"}, "TEAMBOT_PRICE_INPUT"),
        ({"TEAMBOT_PRICE_CACHED": "cheap"}, "TEAMBOT_PRICE_CACHED"),
        ({"TEAMBOT_PROVIDER": "anthropic"}, "TEAMBOT_PROVIDER"),
        ({"TEAMBOT_PROVIDER": "openai"}, "TEAMBOT_API_BASE_URL"),
        ({"TEAMBOT_PROVIDER": "openai", "TEAMBOT_API_BASE_URL": "ftp://x"}, "TEAMBOT_API_BASE_URL"),
        ({"TEAMBOT_API_FLAVOR": "ollama"}, "TEAMBOT_API_FLAVOR"),
        ({"PUTER_API_URL": "api.puter.com"}, "PUTER_API_URL"),
    ):
        with pytest.raises(ConfigError) as raised:
            load_settings(env)
        assert raised.value.variable == variable and "\n" not in str(raised.value)


def test_the_cache_key_is_a_stable_hash_of_the_conversation() -> None:
    conversation = "discord:123456789:987654321:"
    found = prompt_cache_key(conversation)
    assert re.fullmatch(r"[0-9a-f]{32}", found) and found == prompt_cache_key(conversation)
    assert found != prompt_cache_key("discord:123456789:987654322:")
    assert "987654321" not in found and "discord" not in found


async def test_conversations_send_their_key_and_cached_tokens_are_billed_less(
    make_engine, fake_mistral: FakeMistral
) -> None:
    engine = await make_engine()
    for text in ("first " + LONG, "second question", "third question"):
        assert isinstance(final(await collect(engine, message(text))), ReplyDone)
    other = key("C2")
    assert isinstance(final(await collect(engine, message("elsewhere", conv=other))), ReplyDone)
    keys = [body.get("prompt_cache_key") for body in fake_mistral.requests]
    assert keys[0] == keys[1] == keys[2] == prompt_cache_key(str(key()))
    assert keys[3] == prompt_cache_key(str(other)) != keys[0]
    rows = await usage_rows(engine)
    assert rows[0]["cached_tokens"] == 0 and rows[3]["cached_tokens"] == 0  # nothing before
    assert 0 < rows[1]["cached_tokens"] <= rows[1]["prompt_tokens"]
    for row in rows:
        usage = Usage(row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"])
        assert row["cost_usd"] == pytest.approx(cost_usd(usage))
    uncached = cost_usd(Usage(rows[1]["prompt_tokens"], rows[1]["completion_tokens"]))
    assert rows[1]["cost_usd"] < uncached
    totals = await engine.store.usage_totals()
    assert totals.cached_tokens == sum(row["cached_tokens"] for row in rows)


async def test_configured_prices_price_every_record(make_engine, fake_mistral) -> None:
    engine = await make_engine(price_input=2.0, price_output=10.0, price_cached=0.5)
    fake_mistral.enqueue(
        Reply(
            "ok",
            usage={
                "prompt_tokens": 1000,
                "completion_tokens": 100,
                "prompt_tokens_details": {"cached_tokens": 600},
            },
        )
    )
    done = final(await collect(engine, message("price me")))
    assert isinstance(done, ReplyDone) and done.usage == Usage(1000, 100, 600)
    row = (await usage_rows(engine))[-1]
    assert row["cost_usd"] == pytest.approx((400 * 2.0 + 600 * 0.5 + 100 * 10.0) / 1e6)


async def test_free_self_hosting_never_hits_a_spending_limit(make_engine, fake_mistral) -> None:
    engine = await make_engine(
        price_input=0.0, price_output=0.0, price_cached=0.0, user_daily_usd=0.000001
    )
    for n in range(3):
        assert isinstance(final(await collect(engine, message(f"q{n}"))), ReplyDone)
    assert all(row["cost_usd"] == 0 for row in await usage_rows(engine))
    assert fake_mistral.requests[-1]["max_tokens"] == Settings().max_output_tokens


async def test_a_stream_without_usage_is_estimated_not_zero(make_engine, fake_mistral) -> None:
    engine = await make_engine()
    fake_mistral.enqueue(Reply("no usage in this stream", usage={}))
    ratio = engine.accounts.calibration.ratio
    done = final(await collect(engine, message("hello there")))
    assert isinstance(done, ReplyDone)
    row = (await usage_rows(engine))[-1]
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["cost_usd"] > 0
    assert engine.accounts.calibration.ratio == ratio  # nothing reported, nothing learned


async def test_cached_tokens_are_stored_and_summed(store: Store) -> None:
    now = time.time()
    for cached in (0, 300, 500):
        record = UsageRecord("slack", "slack:T:C:", "U1", "m", 1000, 10, 0.0001, 5.0, "ok")
        await store.record_usage(UsageRecord(**{**record.__dict__, "cached_tokens": cached}))
    totals = await store.usage_totals(since=now - 60)
    assert (totals.calls, totals.prompt_tokens, totals.cached_tokens) == (3, 3000, 800)
    assert totals.cached_share == pytest.approx(800 / 3000)
    rows = await store.usage_rows(since=now - 60)
    assert [row.totals.cached_tokens for row in rows] == [800]
    exported = await store.export_user("slack", "U1")
    assert sorted(entry["cached_tokens"] for entry in exported["usage"]) == [0, 300, 500]


async def test_teambot_usage_shows_the_cached_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "usage.db"
    store = await SQLiteStore.open(str(path))
    record = UsageRecord("discord", "discord:G:C:", "U9", "m", 2000, 50, 0.0002, 3.0, "ok")
    await store.record_usage(UsageRecord(**{**record.__dict__, "cached_tokens": 1500}))
    await store.record_usage(record)
    await store.aclose()
    assert await _usage(Settings(database_url=f"sqlite:///{path}"), 7) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "day",
        "platform",
        "user",
        "calls",
        "in",
        "cached",
        "out",
        "cost",
        "$",
    ]
    row = next(line for line in lines if " U9 " in line).split()
    assert row[3:6] == ["2", "4,000", "38%"]  # 1,500 of 4,000 input tokens were cached
    assert lines[-1].startswith("total") and " 38% " in lines[-1]
