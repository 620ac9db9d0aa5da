"""The whole engine on every provider: the same replies, tools, reasoning, images, usage and
failures against each provider's loopback fake (Mistral, vLLM, llama.cpp, OpenRouter,
Puter), through the real client, a real SQLite store and the real pipeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.engine import Engine
from bot.errors import ModelAuthError
from bot.providers import model_client
from bot.puter import NO_CREDIT
from bot.store.sqlite import SQLiteStore
from bot.types import Image, ReplyDone, ReplyFailed, ThinkingDelta
from tests.fakes.mistral import Error, FakeMistral, Reply, ToolCall, ToolCalls
from tests.fakes.openai_compat import FakeOpenAI
from tests.fakes.puter import FakePuter, no_credit
from tests.helpers import ALICE, collect, final, key, message, prompt_text

PROVIDERS = ["mistral", "vllm", "llamacpp", "openrouter", "puter"]
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@dataclass
class Backend:
    """One provider's fake and an engine talking to it."""

    name: str
    fake: Any  # FakeMistral | FakeOpenAI | FakePuter: enqueue(), requests
    engine: Engine

    @property
    def reasons(self) -> bool:
        return self.name != "puter"


def provider_settings(name: str, fake: Any, db: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": f"sqlite:///{db}"}
    if name == "mistral":
        values.update(mistral_api_key="test-key-123456", mistral_base_url=fake.base_url)
    elif name == "puter":
        values.update(provider="puter", puter_auth_token=fake.token, puter_api_url=fake.base_url)
    else:
        values.update(provider="openai", api_base_url=fake.base_url)
        if name == "openrouter":
            values.update(api_flavor="openrouter", model="mistralai/mistral-small-2603")
    values.update(overrides)
    return Settings(**values)


def start_fake(name: str, **options: Any) -> Any:
    if name == "mistral":
        return FakeMistral(**options)
    if name == "puter":
        return FakePuter(**options)
    return FakeOpenAI(name, **options)


async def open_backend(
    stack: AsyncExitStack, name: str, tmp_path: Path, fake_options: dict[str, Any]
) -> Backend:
    fake = await stack.enter_async_context(start_fake(name, **fake_options))
    settings = provider_settings(name, fake, tmp_path / f"{name}.db")
    store = await SQLiteStore.open(settings.database_url.removeprefix("sqlite:///"))
    engine = Engine(settings, store, model_client(settings, retry_budget=1.0, backoff_base=0.01))
    await engine.start()
    stack.push_async_callback(engine.aclose)
    return Backend(name, fake, engine)


@pytest.fixture(params=PROVIDERS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with AsyncExitStack() as stack:
        yield await open_backend(stack, request.param, tmp_path, {})


async def usage_rows(engine: Engine) -> list[dict[str, Any]]:
    store = engine.store
    assert isinstance(store, SQLiteStore)
    return await store._run(store._rows, "SELECT * FROM usage ORDER BY id", [])


async def test_a_whole_reply_with_a_tool_round(backend: Backend) -> None:
    backend.fake.enqueue(
        ToolCalls([ToolCall("current_time", "{}", id="T1me0Call")], split_arguments=True),
        Reply("It is noon."),
    )
    events = await collect(backend.engine, message("what time is it?"))
    done = final(events)
    assert isinstance(done, ReplyDone), done
    assert done.text == "It is noon." and done.tools == ("current_time",)
    answered = backend.fake.requests[1]["messages"]
    tool = next(m for m in answered if m["role"] == "tool")
    assert tool["tool_call_id"] == "T1me0Call" and tool["name"] == "current_time"
    rows = await usage_rows(backend.engine)
    assert [row["kind"] for row in rows] == ["tool_round", "reply"]
    assert all(row["prompt_tokens"] > 0 and row["cost_usd"] > 0 for row in rows)
    history = await collect(backend.engine, message("and now?"))  # replayed rounds accepted
    assert isinstance(final(history), ReplyDone)


async def test_reasoning_thinking_stays_apart(backend: Backend) -> None:
    backend.fake.enqueue(Reply("The answer is 42.", thinking="Six times seven."))
    events = await collect(backend.engine, message("think hard", reasoning=True))
    done = final(events)
    assert isinstance(done, ReplyDone) and done.text == "The answer is 42."
    thought = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert thought == (done.thinking if backend.reasons else "")
    assert ("Six times seven" in done.thinking) == backend.reasons
    assert "Six" not in done.text


async def test_an_image_reaches_the_model(backend: Backend) -> None:
    picture = Image("image/png", PNG, "shot.png")
    done = final(await collect(backend.engine, message("what is this?", images=(picture,))))
    assert isinstance(done, ReplyDone) and done.text.startswith("echo:")
    parts = backend.fake.requests[-1]["messages"][-1]["content"]
    image = next(part["image_url"] for part in parts if part["type"] == "image_url")
    url = image if isinstance(image, str) else image["url"]
    assert url.startswith("data:image/png;base64,")


async def test_a_refused_key_is_one_sentence(backend: Backend) -> None:
    status = {"error": "Unauthorized", "message": "bad token", "code": "token_auth_failed"}
    backend.fake.enqueue(Error(401, status))
    done = final(await collect(backend.engine, message("hello")))
    assert isinstance(done, ReplyFailed) and done.notice == ModelAuthError.user_message


@pytest.mark.parametrize("name", ["vllm", "llamacpp", "puter"])
async def test_no_usage_bills_the_estimate_and_teaches_nothing(name: str, tmp_path: Path) -> None:
    options = {"usage": False} if name != "puter" else {}
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, name, tmp_path, options)
        if name == "puter":
            backend.fake.enqueue(Reply("no usage here", usage={}))
        ratio = backend.engine.accounts.calibration.ratio
        done = final(await collect(backend.engine, message("count me")))
        assert isinstance(done, ReplyDone)
        row = (await usage_rows(backend.engine))[-1]
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["cost_usd"] > 0
        assert done.usage.prompt_tokens == row["prompt_tokens"]  # the estimate, not zero
        assert backend.engine.accounts.calibration.ratio == ratio


async def test_puter_says_it_cannot_reason_and_runs_out_of_credit(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "puter", tmp_path, {})
        said = await backend.engine.command(key(), ALICE, "reasoning", "on")
        assert "does not support reasoning" in said.text and said.private
        settings = await backend.engine.conversation_settings(key())
        assert settings.reasoning is None  # nothing was switched on
        off = await backend.engine.command(key(), ALICE, "reasoning", "off")
        assert "off" in off.text
        backend.fake.enqueue(no_credit())
        done = final(await collect(backend.engine, message("hello", reasoning=True)))
        assert isinstance(done, ReplyFailed) and done.notice == NO_CREDIT
        assert backend.fake.ignored_args == []  # reasoning was never sent


async def test_reasoning_on_works_where_the_provider_can(backend: Backend) -> None:
    if not backend.reasons:
        pytest.skip("Puter cannot reason (see the test above)")
    said = await backend.engine.command(key(), ALICE, "reasoning", "on")
    assert said.text.startswith("Reasoning **on**")
    backend.fake.enqueue(Reply("Sure.", thinking="Considering."))
    done = final(await collect(backend.engine, message("go on")))
    assert isinstance(done, ReplyDone) and "Considering." in done.thinking
    sent = json.dumps(backend.fake.requests[-1])
    assert '"high"' in sent and "go on" in prompt_text(backend.fake.requests[-1])
