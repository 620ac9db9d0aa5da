"""The OpenAI-compatible and Puter clients against their loopback fakes (real HTTP)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import ContextTooLong, ModelAuthError, ModelRateLimited, StreamCut
from bot.model import (
    AnswerChunk,
    Finished,
    ModelEvent,
    ModelRequest,
    ThinkingChunk,
    ToolCalls,
    capabilities_of,
)
from bot.openai_compat import NO_CREDIT as PROVIDER_NO_CREDIT
from bot.openai_compat import OpenAICompatClient, reasoning_fields
from bot.puter import NO_CREDIT, PuterClient
from bot.types import Usage
from tests.fakes.mistral import Disconnect, Error, Reply
from tests.fakes.mistral import ToolCall as Call
from tests.fakes.mistral import ToolCalls as Calls
from tests.fakes.openai_compat import CONTEXT_ERRORS, FakeOpenAI, MidStreamError
from tests.fakes.puter import FakePuter, StreamError, no_credit

MODEL = "mistral-small-2603"
HELLO = ModelRequest([{"role": "user", "content": "hello"}], max_tokens=64)
THINK = ModelRequest([{"role": "user", "content": "hard one"}], reasoning=True, max_tokens=64)
PNG = "data:image/png;base64,iVBORw0KGgo="
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


async def collect(client: Any, request: ModelRequest = HELLO) -> list[ModelEvent]:
    return [event async for event in client.stream(request)]


def answer(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, AnswerChunk))


def thinking(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ThinkingChunk))


def openai_client(fake: FakeOpenAI, **options: Any) -> OpenAICompatClient:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("retry_budget", 2.0)
    return OpenAICompatClient(options.pop("api_key", ""), fake.base_url, MODEL, **options)


@pytest.fixture
async def vllm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI("vllm") as fake:
        yield fake


# -- OpenAI-compatible servers ----------------------------------------------------------------


async def test_vllm_reasoning_thinking_apart_and_usage_asked_for(vllm: FakeOpenAI) -> None:
    vllm.enqueue(Reply("John is 22.", thinking="Ages add up."))
    client = openai_client(vllm)
    events = await collect(client, THINK)
    await client.aclose()
    body = vllm.requests[0]
    assert body["reasoning_effort"] == "high" and "chat_template_kwargs" not in body
    assert body["stream_options"] == {"include_usage": True}
    assert thinking(events) == "Ages add up." and answer(events) == "John is 22."
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.usage.reported
    assert finished.usage.completion_tokens > 0 and vllm.models_asked == 1  # flavor probe


@pytest.mark.parametrize("variant", ["llamacpp", "sglang"])
async def test_reasoning_content_servers(variant: str) -> None:
    async with FakeOpenAI(variant) as fake:
        fake.enqueue(Reply("Yes.", thinking="Check it."), Reply("Again."))
        client = openai_client(fake)
        first = await collect(client, THINK)
        second = await collect(client, HELLO)
        await client.aclose()
    assert thinking(first) == "Check it." and answer(first) == "Yes."
    assert answer(second) == "Again." and not thinking(second)
    assert client.flavor == variant and fake.models_asked == 1  # asked once, remembered
    asked = fake.requests[0]
    if variant == "llamacpp":
        assert asked["chat_template_kwargs"] == {"reasoning_effort": "high"}
        assert fake.requests[1]["chat_template_kwargs"] == {"reasoning_effort": "none"}
    else:
        assert asked["reasoning_effort"] == "high" and "chat_template_kwargs" not in asked


async def test_openrouter_reasoning_object_comments_and_mid_stream_error() -> None:
    async with FakeOpenAI("openrouter", api_key="sk-or-secret-1234") as fake:
        fake.enqueue(Reply("Fine.", thinking="Hmm."), MidStreamError("Half an ans"))
        client = openai_client(fake, api_key="sk-or-secret-1234", flavor="openrouter")
        events = await collect(client, THINK)
        with pytest.raises(StreamCut, match="Provider returned error"):
            await collect(client)
        await client.aclose()
    assert fake.requests[0]["reasoning"] == {"effort": "high"}
    assert "reasoning_effort" not in fake.requests[0] and fake.models_asked == 0
    assert thinking(events) == "Hmm." and answer(events) == "Fine."
    assert fake.auth_headers[0] == "Bearer sk-or-secret-1234"


async def test_split_tool_call_deltas_become_one_call(vllm: FakeOpenAI) -> None:
    arguments = {"query": "release plan", "limit": 5}
    vllm.enqueue(Calls([Call("lookup", arguments, id="call-abc")], text="Looking."))
    client = openai_client(vllm)
    request = ModelRequest([{"role": "user", "content": "find it"}], tools=(TOOL,))
    events = await collect(client, request)
    await client.aclose()
    calls = next(e for e in events if isinstance(e, ToolCalls)).calls
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call-abc", "lookup", arguments)
    ]
    assert events[-1] == Finished(events[-1].usage, "tool_calls")  # type: ignore[union-attr]
    assert vllm.requests[0]["tool_choice"] == "auto" and answer(events) == "Looking."


async def test_a_server_without_usage_finishes_without_usage() -> None:
    async with FakeOpenAI("vllm", usage=False) as fake:
        client = openai_client(fake)
        events = await collect(client)
        await client.aclose()
    assert answer(events) == "echo: hello"
    assert events[-1] == Finished(Usage(), "stop") and not Usage().reported


async def test_images_go_as_url_objects_and_no_key_sends_no_header(vllm: FakeOpenAI) -> None:
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": PNG}]
    client = openai_client(vllm)
    events = await collect(client, ModelRequest([{"role": "user", "content": content}]))
    await client.aclose()
    assert answer(events) == "echo: what is this?"  # the fake refuses string image URLs
    assert vllm.requests[0]["messages"][0]["content"][1]["image_url"] == {"url": PNG}
    assert vllm.auth_headers == [None]


@pytest.mark.parametrize("variant", ["vllm", "llamacpp"])
async def test_context_overflow_is_context_too_long(variant: str) -> None:
    status, body = CONTEXT_ERRORS[variant]
    async with FakeOpenAI(variant) as fake:
        fake.enqueue(Error(status, body))
        client = openai_client(fake, flavor=variant)
        with pytest.raises(ContextTooLong):
            await collect(client)
        await client.aclose()
    assert len(fake.requests) == 1


async def test_openai_errors_map_onto_the_exception_tree(
    vllm: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    credit = {"error": {"code": 402, "message": "Insufficient credits", "metadata": {}}}
    rate = {"error": {"code": 429, "message": "Rate limited"}}
    vllm.enqueue(Error(402, credit), Error(429, rate), Reply("after a retry"))
    vllm.api_key = "sk-local-9876543210"
    client = openai_client(vllm, api_key="sk-local-9876543210")
    with pytest.raises(ModelRateLimited) as spent:
        await collect(client)
    assert spent.value.user_message == PROVIDER_NO_CREDIT and len(vllm.requests) == 1
    assert answer(await collect(client)) == "after a retry"  # the 429 was retried
    wrong = openai_client(vllm, api_key="sk-wrong-key-000")
    with caplog.at_level(logging.INFO, logger="teambot.model"), pytest.raises(ModelAuthError):
        await collect(wrong)
    await client.aclose()
    await wrong.aclose()
    assert "sk-wrong-key-000" not in caplog.text and "openai:" in caplog.text


def test_reasoning_fields_per_flavor_and_model() -> None:
    assert reasoning_fields("vllm", True, MODEL) == {"reasoning_effort": "high"}
    assert reasoning_fields("openai", False, MODEL) == {"reasoning_effort": "none"}
    assert reasoning_fields("openrouter", False, "mistralai/mistral-small-2603") == {
        "reasoning": {"effort": "none"}
    }
    assert reasoning_fields("vllm", False, "Qwen/Qwen3-8B") == {}  # its server's default
    assert reasoning_fields("vllm", True, "Qwen/Qwen3-8B") == {"reasoning_effort": "high"}


# -- Puter ------------------------------------------------------------------------------------


def puter_client(fake: FakePuter, token: str | None = None, **options: Any) -> PuterClient:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("retry_budget", 2.0)
    return PuterClient(token or fake.token, fake.base_url, MODEL, **options)


@pytest.fixture
async def puter() -> AsyncIterator[FakePuter]:
    async with FakePuter() as fake:
        yield fake


async def test_puter_driver_call_and_ndjson_stream(puter: FakePuter) -> None:
    puter.enqueue(Reply("Hello there.", usage={"prompt_tokens": 40, "completion_tokens": 3}))
    client = puter_client(puter)
    events = await collect(client, THINK)  # reasoning asked: Puter cannot pass it on
    await client.aclose()
    call = puter.calls[0]
    assert (call["interface"], call["driver"], call["method"]) == (
        "puter-chat-completion",
        "ai-chat",
        "complete",
    )
    assert puter.content_types == ["text/plain;actually=json"] and "auth_token" not in call
    assert set(call["args"]) == {"messages", "model", "stream", "max_tokens"}
    assert puter.ignored_args == [] and not capabilities_of(client).reasoning
    assert answer(events) == "Hello there." and not thinking(events)
    assert events[-1] == Finished(Usage(40, 3), "stop")


async def test_puter_tool_use_lines_and_the_last_round_without_tools(puter: FakePuter) -> None:
    puter.enqueue(Calls([Call("lookup", {"q": "x"}, id="D681PevKs")]), Reply("Done."))
    client = puter_client(puter)
    events = await collect(client, ModelRequest([{"role": "user", "content": "go"}], tools=(TOOL,)))
    last = ModelRequest([{"role": "user", "content": "go"}], tools=(TOOL,), tool_choice="none")
    await collect(client, last)
    await client.aclose()
    calls = next(e for e in events if isinstance(e, ToolCalls)).calls
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("D681PevKs", "lookup", {"q": "x"})
    ]
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "tool_calls"
    assert puter.requests[0]["tools"] == [TOOL] and "tools" not in puter.requests[1]


async def test_puter_out_of_credit_is_said_plainly_and_not_retried(puter: FakePuter) -> None:
    puter.enqueue(no_credit())
    client = puter_client(puter)
    with pytest.raises(ModelRateLimited) as raised:
        await collect(client)
    assert raised.value.user_message == NO_CREDIT and raised.value.status == 402
    assert len(puter.calls) == 1
    puter.enqueue(StreamError("", "Insufficient funds", "insufficient_funds"))
    with pytest.raises(ModelRateLimited) as mid:
        await collect(client)
    await client.aclose()
    assert mid.value.user_message == NO_CREDIT


async def test_puter_errors_and_cuts(puter: FakePuter, caplog: pytest.LogCaptureFixture) -> None:
    wrong = puter_client(puter, token="not-the-token-123")
    with caplog.at_level(logging.INFO, logger="teambot.model"), pytest.raises(ModelAuthError):
        await collect(wrong)
    await wrong.aclose()
    assert "not-the-token-123" not in caplog.text
    puter.enqueue(StreamError("Half of it"), Disconnect("Also half"))
    client = puter_client(puter)
    with pytest.raises(StreamCut, match="upstream provider unavailable"):
        await collect(client)
    with pytest.raises(StreamCut):
        await collect(client)
    await client.aclose()


async def test_puter_stream_with_empty_usage_reports_none(puter: FakePuter) -> None:
    puter.enqueue(Reply("ok", usage={}))
    client = puter_client(puter)
    events = await collect(client)
    await client.aclose()
    assert events[-1] == Finished(Usage(), "stop") and answer(events) == "ok"


async def test_puter_whole_json_answer(puter: FakePuter) -> None:
    client = puter_client(puter)
    body = client.request_body(HELLO)
    body["args"]["stream"] = False  # a proxy that drops `stream` gets the whole answer
    events = [event async for event in client._once(body)]
    await client.aclose()
    assert answer(events) == "echo: hello" and isinstance(events[-1], Finished)
    assert events[-1].usage.reported
