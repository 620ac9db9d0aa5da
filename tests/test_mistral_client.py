"""MistralClient against FakeMistral over real loopback HTTP + SSE."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bot.errors import (
    ContextTooLong,
    ModelAuthError,
    ModelBadRequest,
    ModelRateLimited,
    ModelUnavailable,
    StreamCut,
)
from bot.mistral import (
    MistralClient,
    PendingToolCall,
    add_tool_call_deltas,
    complete_tool_calls,
    retry_after_seconds,
)
from bot.model import AnswerChunk, Finished, ModelEvent, ModelRequest, ThinkingChunk
from bot.model import ToolCall as ModelToolCall
from bot.model import ToolCalls as ModelToolCalls
from bot.sse import SSEDecoder
from bot.types import Usage
from tests.fakes.mistral import (
    ALLOWED_FIELDS,
    CONTEXT_ERROR,
    Disconnect,
    Error,
    FakeMistral,
    Hang,
    Reply,
    ToolCall,
    ToolCalls,
    error_body,
)

KEY = "sk-test-0123456789abcdef"
MODEL = "mistral-small-2603"
HELLO = ModelRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=64)
RATE_LIMITED = error_body("Rate limit exceeded", "rate_limited", "1300")

ClientFactory = Callable[..., MistralClient]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeMistral]:
    async with FakeMistral(api_key=KEY) as server:
        yield server


@pytest_asyncio.fixture
async def make_client(fake: FakeMistral) -> AsyncIterator[ClientFactory]:
    clients: list[MistralClient] = []

    def build(**options: Any) -> MistralClient:
        options.setdefault("backoff_base", 0.05)
        base_url = options.pop("base_url", fake.base_url)
        api_key = options.pop("api_key", KEY)
        client = MistralClient(api_key, base_url, MODEL, **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


async def collect(client: MistralClient, request: ModelRequest = HELLO) -> list[ModelEvent]:
    return [event async for event in client.stream(request)]


def answer_of(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, AnswerChunk))


def thinking_of(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ThinkingChunk))


async def test_plain_stream_yields_chunks_then_one_finished(fake, make_client) -> None:
    fake.enqueue(Reply("Hello there, how can I help?"))
    events = await collect(make_client())
    assert answer_of(events) == "Hello there, how can I help?"
    assert len([e for e in events if isinstance(e, AnswerChunk)]) > 1  # really streamed
    assert thinking_of(events) == ""
    assert [type(e) for e in events].count(Finished) == 1
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == "stop"


async def test_one_connection_serves_replies_one_after_another(fake, make_client) -> None:
    client = make_client()
    for text in ("first", "second", "third"):
        fake.enqueue(Reply(text))
        assert answer_of(await collect(client)) == text
        await asyncio.sleep(0.05)  # the body's end is read in the background
    # Reused, not reopened: in production each new one would cost a TLS handshake.
    assert len(fake.client_ports) == 3 and len(set(fake.client_ports)) == 1


async def test_a_connection_cut_after_the_answer_is_not_reused(fake, make_client) -> None:
    client = make_client()
    fake.enqueue(Disconnect(after_text="half"))
    with pytest.raises(StreamCut):
        await collect(client)
    fake.enqueue(Reply("whole"))
    assert answer_of(await collect(client)) == "whole"
    assert len(set(fake.client_ports)) == 2


async def test_default_reply_echoes_the_last_user_message(fake, make_client) -> None:
    request = ModelRequest(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ]
    )
    assert answer_of(await collect(make_client(), request)) == "echo: second question"


async def test_thinking_is_kept_apart_from_the_answer(fake, make_client) -> None:
    fake.enqueue(Reply("John is 22.", thinking="Let me work out the ages first."))
    events = await collect(make_client(), ModelRequest(HELLO.messages, reasoning=True))
    assert thinking_of(events) == "Let me work out the ages first."
    assert answer_of(events) == "John is 22."
    kinds = [type(e) for e in events]
    last_thought = max(i for i, kind in enumerate(kinds) if kind is ThinkingChunk)
    first_answer = kinds.index(AnswerChunk)
    assert last_thought < first_answer  # the closing thought precedes the first answer part


async def test_usage_and_finish_reason_come_from_the_last_chunk(fake, make_client) -> None:
    usage = {"prompt_tokens": 77, "completion_tokens": 1114, "total_tokens": 1191}
    fake.enqueue(Reply("Cut short", usage=usage, finish_reason="length"))
    events = await collect(make_client())
    assert answer_of(events) == "Cut short"  # the final chunk's own content is kept too
    assert events[-1] == Finished(Usage(77, 1114), "length")


async def test_computed_usage_counts_the_streamed_chunks(fake, make_client) -> None:
    fake.enqueue(Reply("x", chunks=["a", "b", "c"]))
    events = await collect(make_client())
    assert answer_of(events) == "abc"
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.usage.completion_tokens == 3
    assert finished.usage.prompt_tokens > 0


# -- function calling --------------------------------------------------------------------

TOOLS = (
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
)
ASK = {"role": "user", "content": "Weather and time in Paris?"}
WITH_TOOLS = ModelRequest(messages=[ASK], tools=TOOLS)
MISTRAL_ID = re.compile(r"^[A-Za-z0-9]{9}$")


def calls_of(events: list[ModelEvent]) -> tuple[ModelToolCall, ...]:
    """The calls of the one ToolCalls event, which must come right before Finished."""
    found = [e for e in events if isinstance(e, ModelToolCalls)]
    assert len(found) == 1, events
    assert events[-2] is found[0] and isinstance(events[-1], Finished)
    return found[0].calls


def call_message(*calls: tuple[str, str], content: str = "") -> dict[str, Any]:
    """An assistant message calling (id, function name) pairs."""
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": '{"city":"Paris"}'}}
            for i, n in calls
        ],
    }


def result(call_id: str, name: str, content: Any = "18 °C, sunny") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}


def follow_up(calls: tuple[ModelToolCall, ...]) -> list[dict[str, Any]]:
    """The next request's messages after running `calls`, as the engine would send them."""
    assistant = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }
    return [ASK, assistant, *(result(c.id, c.name, f"result of {c.name}") for c in calls)]


def test_request_body_without_tools_has_no_tool_fields(make_client) -> None:
    body = make_client().request_body(HELLO)
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(body)


@pytest.mark.parametrize("choice", ["auto", "none"])
async def test_request_body_with_tools_is_sent_and_accepted(fake, make_client, choice) -> None:
    request = ModelRequest([ASK], tools=TOOLS, tool_choice=choice)
    events = await collect(make_client(), request)
    assert answer_of(events) == "echo: Weather and time in Paris?"
    (body,) = fake.requests
    assert body["tools"] == list(TOOLS)
    assert body["tool_choice"] == choice
    assert body["parallel_tool_calls"] is True


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Zürich"}', '{"city": "Zürich"}'),  # JSON text is kept as written
        ({"city": "Zürich", "days": [1, 2]}, '{"city":"Zürich","days":[1,2]}'),  # compact
    ],
)
async def test_one_streamed_call(fake, make_client, arguments, expected) -> None:
    fake.enqueue(ToolCall("get_weather", arguments))
    events = await collect(make_client(), WITH_TOOLS)
    (call_id,) = fake.tool_call_ids
    assert MISTRAL_ID.match(call_id)
    assert calls_of(events) == (ModelToolCall(call_id, "get_weather", expected),)
    assert events == [ModelToolCalls(calls_of(events)), events[-1]]  # no text events
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == "tool_calls"
    assert finished.usage.completion_tokens > 0


async def test_parallel_calls_come_in_index_order(fake, make_client) -> None:
    fake.enqueue(
        ToolCalls(
            [
                ToolCall("get_weather", '{"city": "Paris"}'),
                ToolCall("get_time", {"city": "Paris"}),
                ToolCall("get_weather", '{"city": "Rome"}'),
            ],
            usage={"prompt_tokens": 40, "completion_tokens": 30, "total_tokens": 70},
        )
    )
    events = await collect(make_client(), WITH_TOOLS)
    calls = calls_of(events)
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", '{"city":"Paris"}'),
        ("get_weather", '{"city": "Rome"}'),
    ]
    assert [c.id for c in calls] == fake.tool_call_ids
    assert len(set(fake.tool_call_ids)) == 3
    assert events[-1] == Finished(Usage(40, 30), "tool_calls")


async def test_arguments_split_across_chunks_are_joined(fake, make_client) -> None:
    first = '{"city": "Paris", "units": "metric", "days": 3}'
    fake.enqueue(
        ToolCalls(
            [ToolCall("get_weather", first), ToolCall("get_time", '{"city": "Oslo"}')],
            split_arguments=True,
        )
    )
    calls = calls_of(await collect(make_client(), WITH_TOOLS))
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        (fake.tool_call_ids[0], "get_weather", first),
        (fake.tool_call_ids[1], "get_time", '{"city": "Oslo"}'),
    ]


async def test_fake_really_splits_the_arguments(fake) -> None:
    """The wire format behind the test above: pieces after the first carry no id or name."""
    fake.enqueue(ToolCalls([ToolCall("get_weather", '{"city": "Paris"}')], split_arguments=True))
    body = {"model": MODEL, "messages": [ASK], "stream": True}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        raw = await http.post(fake.base_url + "/chat/completions", json=body)
    decoder = SSEDecoder()
    events = [json.loads(d) for d in decoder.feed(raw.content) if d != "[DONE]"]
    parts = [part for e in events for part in e["choices"][0]["delta"].get("tool_calls") or []]
    assert len(parts) == 3
    assert parts[0]["id"] == fake.tool_call_ids[0]
    assert parts[0]["function"]["name"] == "get_weather"
    assert all(
        set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in parts[1:]
    )
    pieces = [p["function"]["arguments"] for p in parts]
    assert all(pieces) and "".join(pieces) == '{"city": "Paris"}'
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1]["usage"]["completion_tokens"] > 0


async def test_calls_without_ids_get_distinct_mistral_style_ids(fake, make_client) -> None:
    long_id = "call_9f8e7d6c5b4a39281706"  # a foreign server's id is passed on untouched
    fake.enqueue(
        ToolCalls(
            [
                ToolCall("get_weather", "{}", id=""),
                ToolCall("get_time", "{}", id=""),
                ToolCall("get_time", '{"city": "Rome"}', id=long_id),
            ]
        )
    )
    calls = calls_of(await collect(make_client(), WITH_TOOLS))
    assert fake.tool_call_ids == [long_id]
    assert all(MISTRAL_ID.match(c.id) for c in calls[:2])
    assert calls[0].id != calls[1].id
    assert calls[2].id == long_id


@pytest.mark.parametrize("finish_reason", ["tool_calls", "stop"])
async def test_text_before_the_calls(fake, make_client, finish_reason) -> None:
    fake.enqueue(
        ToolCalls(
            [ToolCall("get_weather", '{"city": "Paris"}')],
            text="Let me look that up.",
            finish_reason=finish_reason,
        )
    )
    events = await collect(make_client(), WITH_TOOLS)
    assert answer_of(events) == "Let me look that up."
    assert len([e for e in events if isinstance(e, AnswerChunk)]) > 1
    assert [c.name for c in calls_of(events)] == ["get_weather"]  # also checks the order
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == finish_reason


async def test_calls_in_a_non_streamed_json_completion(make_client) -> None:
    async with FakeMistral(ignore_stream=True) as proxy:
        proxy.enqueue(
            ToolCalls(
                [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", "{}", id="")],
                text="Checking.",
                usage={"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
            )
        )
        events = await collect(make_client(base_url=proxy.base_url), WITH_TOOLS)
    assert answer_of(events) == "Checking."
    weather, time_call = calls_of(events)
    assert weather == ModelToolCall(proxy.tool_call_ids[0], "get_weather", '{"city":"Paris"}')
    assert time_call.name == "get_time" and time_call.arguments == "{}"
    assert MISTRAL_ID.match(time_call.id) and time_call.id != weather.id
    assert events[-1] == Finished(Usage(9, 8), "tool_calls")


async def test_a_call_stream_broken_before_its_finish_is_retried(fake, make_client) -> None:
    fake.enqueue(
        ToolCalls([ToolCall("get_weather", '{"city": "Lost"}')], disconnect_before_finish=True),
        ToolCalls([ToolCall("get_time", '{"city": "Kept"}')]),
    )
    events = await collect(make_client(), WITH_TOOLS)
    assert len(fake.requests) == 2
    # Nothing of the broken attempt leaks out: one ToolCalls, from the second attempt.
    assert calls_of(events) == (
        ModelToolCall(fake.tool_call_ids[1], "get_time", '{"city": "Kept"}'),
    )


async def test_text_then_a_break_before_the_calls_finish_is_a_stream_cut(fake, make_client) -> None:
    fake.enqueue(
        ToolCalls(
            [ToolCall("get_weather", "{}")], text="Let me check", disconnect_before_finish=True
        ),
        Reply("must not be requested"),
    )
    seen: list[ModelEvent] = []
    with pytest.raises(StreamCut):
        async for event in make_client().stream(WITH_TOOLS):
            seen.append(event)
    assert answer_of(seen) == "Let me check"
    assert not any(isinstance(e, ModelToolCalls | Finished) for e in seen)
    assert len(fake.requests) == 1


async def test_returned_calls_make_an_accepted_follow_up(fake, make_client) -> None:
    client = make_client()
    fake.enqueue(
        ToolCalls([ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", "{}", id="")]),
        Reply("Sunny, and it is noon."),
    )
    calls = calls_of(await collect(client, WITH_TOOLS))
    messages = follow_up(calls)
    events = await collect(client, ModelRequest(messages, tools=TOOLS))
    assert answer_of(events) == "Sunny, and it is noon."
    later = [
        *messages,
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "ok"},
    ]
    assert answer_of(await collect(client, ModelRequest(later, tools=TOOLS))) == "echo: ok"
    assert fake.requests[1]["messages"][1]["tool_calls"][1]["id"] == calls[1].id


CALLS = call_message(("aaaaaaaa1", "get_weather"), ("bbbbbbbb2", "get_time"))
WEATHER = result("aaaaaaaa1", "get_weather")
TIME = result("bbbbbbbb2", "get_time")
ORDER = ("invalid_request_message_order", "3230")
INVALID = ("invalid_request_error", None)


@pytest.mark.parametrize(
    ("messages", "kind", "message"),
    [
        pytest.param(
            [ASK, CALLS, WEATHER, result("zzzzzzzz9", "get_time")],
            INVALID,
            "does not answer a call",
            id="mismatched-ids",
        ),
        pytest.param([ASK, CALLS, WEATHER], ORDER, "Not the same number", id="missing-tool-end"),
        pytest.param(
            [ASK, CALLS, WEATHER, {"role": "user", "content": "and?"}],
            ORDER,
            "Not the same number",
            id="missing-tool-then-user",
        ),
        pytest.param(
            [ASK, CALLS, {"role": "user", "content": "hm"}, WEATHER, TIME],
            ORDER,
            "Not the same number",
            id="user-in-between",
        ),
        pytest.param(
            [ASK, CALLS, WEATHER, TIME, {"role": "user", "content": "and?"}],
            ORDER,
            "Unexpected role 'user' after role 'tool'",
            id="user-after-tool",
        ),
        pytest.param(
            [ASK, {"role": "assistant", "content": ""}, {"role": "user", "content": "?"}],
            INVALID,
            "Assistant message must have either content or tool_calls",
            id="empty-assistant",
        ),
        pytest.param(
            [ASK, {"role": "assistant", "content": None, "tool_calls": []}, ASK],
            INVALID,
            "Assistant message must have either content or tool_calls",
            id="assistant-with-no-calls",
        ),
        pytest.param([ASK, WEATHER], ORDER, "Unexpected role 'tool' after role 'user'", id="stray"),
        pytest.param(
            [ASK, CALLS, WEATHER, WEATHER, TIME], INVALID, "does not answer", id="answered-twice"
        ),
        pytest.param(
            [ASK, CALLS, WEATHER, result("bbbbbbbb2", "get_weather")],
            INVALID,
            "does not match the call's function",
            id="wrong-name",
        ),
        pytest.param(
            [ASK, CALLS, WEATHER, result("bbbbbbbb2", "get_time", {"hour": 12})],
            INVALID,
            "tool content must be a string",
            id="non-string-content",
        ),
    ],
)
async def test_fake_rejects_bad_tool_message_order(
    fake, make_client, messages, kind, message
) -> None:
    fake.enqueue(Reply("kept for the good request"))
    with pytest.raises(ModelBadRequest, match=re.escape(message)) as caught:
        await collect(make_client(), ModelRequest(messages, tools=TOOLS))
    assert caught.value.status == 400
    assert len(fake.requests) == 1  # a 400 is not retried
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        raw = await http.post(
            fake.base_url + "/chat/completions", json={"model": MODEL, "messages": messages}
        )
    assert raw.status_code == 400
    assert (raw.json()["type"], raw.json()["code"]) == kind
    assert raw.json()["object"] == "error" and message in raw.json()["message"]
    # The rejected requests did not use up the scripted reply.
    good = [ASK, CALLS, TIME, WEATHER, {"role": "assistant", "content": "Sunny at noon."}, ASK]
    assert (
        answer_of(await collect(make_client(), ModelRequest(good))) == "kept for the good request"
    )


@pytest.mark.parametrize(
    ("extra", "accepted"),
    [
        ({"tools": list(TOOLS), "tool_choice": "any"}, True),
        ({"tools": list(TOOLS), "tool_choice": "required"}, True),
        (
            {
                "tools": list(TOOLS),
                "tool_choice": {"type": "function", "function": {"name": "get_time"}},
            },
            True,
        ),
        ({"tools": list(TOOLS), "tool_choice": "sometimes"}, False),
        ({"tools": list(TOOLS), "tool_choice": {"type": "function", "function": {}}}, False),
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, False),
        ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, False),
        ({"tools": [{"type": "web_search"}]}, False),
        ({"tools": [{"type": "function"}]}, False),
        ({"tools": [TOOLS[0], TOOLS[0]]}, False),
    ],
)
async def test_fake_validates_tools_and_tool_choice(fake, extra, accepted) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        raw = await http.post(
            fake.base_url + "/chat/completions", json={"model": MODEL, "messages": [ASK], **extra}
        )
    assert raw.status_code == (200 if accepted else 400), raw.text
    if not accepted:
        assert raw.json()["type"] == "invalid_request_error"


async def test_client_maps_a_bad_tool_definition_to_bad_request(fake, make_client) -> None:
    bad = ({"type": "function", "function": {"name": "get weather", "parameters": {}}},)
    with pytest.raises(ModelBadRequest, match="must match"):
        await collect(make_client(), ModelRequest([ASK], tools=bad))
    assert len(fake.requests) == 1


async def test_calls_sharing_an_index_or_without_one_stay_apart() -> None:
    """Foreign servers: every call at index 0, or no index, told apart by id; a continuation
    chunk with a placeholder id; the calls' chunks arriving out of index order."""

    def call(**fields: Any) -> dict[str, Any]:
        return {"content": "", "tool_calls": [fields]}

    payload = "".join(
        f"data: {chunk}\n\n"
        for chunk in (
            sse_chunk(call(index=1, id="second123", function={"name": "b", "arguments": '{"n"'})),
            sse_chunk(call(index=0, id="first1234", function={"name": "a", "arguments": "{}"})),
            sse_chunk(call(index=1, id="null", function={"arguments": ": 2}"})),
            sse_chunk(call(index=1, id="third1234", function={"name": "c", "arguments": "{}"})),
            sse_chunk(call(id="fourth123", function={"name": "d", "arguments": {"k": None}})),
            sse_chunk(
                {"content": None}, "tool_calls", {"prompt_tokens": 1, "completion_tokens": 1}
            ),
            "[DONE]",
        )
    ).encode()
    client = raw_stream_client(payload)
    events = await collect(client)
    await client.aclose()
    assert calls_of(events) == (
        ModelToolCall("first1234", "a", "{}"),
        ModelToolCall("second123", "b", '{"n": 2}'),
        ModelToolCall("third1234", "c", "{}"),
        ModelToolCall("fourth123", "d", '{"k":null}'),
    )


def test_tool_call_helpers_drop_nameless_calls_and_fill_in_ids() -> None:
    pending: list[PendingToolCall] = []
    add_tool_call_deltas(pending, [{"index": 0, "function": {"name": "a"}}])
    add_tool_call_deltas(pending, [{"index": 1, "id": "x", "function": {"arguments": "{}"}}])
    add_tool_call_deltas(pending, "not a list")
    ids = iter(["generated"])
    done = complete_tool_calls(pending, new_id=lambda: next(ids))
    assert done == ModelToolCalls((ModelToolCall("generated", "a", "{}"),))
    assert complete_tool_calls([]) is None


@pytest.mark.parametrize(("reasoning", "effort"), [(True, "high"), (False, "none")])
async def test_request_body_is_explicit_and_accepted(fake, make_client, reasoning, effort) -> None:
    request = ModelRequest(
        HELLO.messages,
        reasoning=reasoning,
        max_tokens=321,
        extra={"temperature": 0.3, "seed": 7, "stream_options": {"include_usage": True}},
    )
    events = await collect(make_client(), request)
    assert isinstance(events[-1], Finished)
    (body,) = fake.requests
    assert body["reasoning_effort"] == effort
    assert body["max_tokens"] == 321
    assert body["stream"] is True
    assert body["model"] == MODEL
    assert body["messages"] == HELLO.messages
    assert body["temperature"] == 0.3
    assert set(body) <= ALLOWED_FIELDS
    assert not {"seed", "stream_options", "user", "logit_bias"} & set(body)


async def test_wrong_key_is_an_auth_error_without_retry(fake, make_client) -> None:
    with pytest.raises(ModelAuthError) as caught:
        await collect(make_client(api_key="sk-wrong"))
    assert caught.value.status == 401
    assert len(fake.requests) == 1


async def test_forbidden_model_is_an_auth_error(fake, make_client) -> None:
    fake.enqueue(Error(403, error_body("Model not available on your tier", "forbidden")))
    with pytest.raises(ModelAuthError, match="not available on your tier"):
        await collect(make_client())
    assert len(fake.requests) == 1


async def test_429_honours_retry_after_then_succeeds(fake, make_client) -> None:
    fake.enqueue(Error(429, RATE_LIMITED, {"Retry-After": "1"}))
    events = await collect(make_client(retry_budget=5))
    assert answer_of(events) == "echo: hello"
    assert len(fake.requests) == 2
    assert fake.request_times[1] - fake.request_times[0] >= 0.95


async def test_429_forever_gives_up_within_the_budget(fake, make_client, caplog) -> None:
    fake.enqueue(*[Error(429, RATE_LIMITED, {"Retry-After": "0"})] * 200)
    started = time.perf_counter()
    with pytest.raises(ModelRateLimited, match="Rate limit exceeded") as caught:
        await collect(make_client(retry_budget=0.5))
    assert time.perf_counter() - started < 1.5
    assert caught.value.status == 429
    assert 2 <= len(fake.requests) < 200


async def test_retry_after_beyond_the_cap_is_not_waited_for(fake, make_client) -> None:
    fake.enqueue(Error(429, RATE_LIMITED, {"Retry-After": "3600"}))
    started = time.perf_counter()
    with pytest.raises(ModelRateLimited):
        await collect(make_client(retry_budget=5))
    assert time.perf_counter() - started < 1
    assert len(fake.requests) == 1


async def test_500_then_success(fake, make_client) -> None:
    fake.enqueue(Error(500, error_body("Internal server error", "api_error")), Reply("fine"))
    assert answer_of(await collect(make_client())) == "fine"
    assert len(fake.requests) == 2


async def test_503_forever_is_unavailable(fake, make_client) -> None:
    fake.enqueue(*[Error(503, "upstream connect error")] * 100)
    with pytest.raises(ModelUnavailable, match="upstream connect error") as caught:
        await collect(make_client(retry_budget=0.3))
    assert not isinstance(caught.value, StreamCut)
    assert caught.value.status == 503


async def test_context_too_long_is_not_retried(fake, make_client) -> None:
    fake.enqueue(Error(400, error_body(CONTEXT_ERROR, "invalid_request_error")))
    with pytest.raises(ContextTooLong, match="262144 maximum context length"):
        await collect(make_client())
    assert len(fake.requests) == 1


async def test_422_is_a_bad_request_carrying_the_api_message(fake, make_client) -> None:
    detail = {
        "detail": [{"type": "extra_forbidden", "loc": ["body", "seed"], "msg": "Extra inputs"}]
    }
    fake.enqueue(Error(422, error_body(detail, "invalid_request_error")))
    with pytest.raises(ModelBadRequest, match=r"body\.seed: Extra inputs") as caught:
        await collect(make_client())
    assert not isinstance(caught.value, ContextTooLong)
    assert len(fake.requests) == 1


async def test_other_400_is_a_bad_request(fake, make_client) -> None:
    message = "Unexpected role 'user' after role 'tool'"
    fake.enqueue(Error(400, error_body(message, "invalid_request_message_order", "3230")))
    with pytest.raises(ModelBadRequest, match=r"Unexpected role 'user'.*3230") as caught:
        await collect(make_client())
    assert not isinstance(caught.value, ContextTooLong)


async def test_disconnect_mid_stream_cuts_after_the_partial_text(fake, make_client) -> None:
    fake.enqueue(Disconnect("The first half of"), Reply("must not be requested"))
    seen: list[ModelEvent] = []
    with pytest.raises(StreamCut):
        async for event in make_client().stream(HELLO):
            seen.append(event)
    assert answer_of(seen) == "The first half of"
    assert not any(isinstance(e, Finished) for e in seen)
    assert len(fake.requests) == 1


async def test_disconnect_before_any_text_is_retried(fake, make_client) -> None:
    fake.enqueue(Disconnect(""), Reply("second try"))
    assert answer_of(await collect(make_client())) == "second try"
    assert len(fake.requests) == 2


async def test_hang_before_first_byte_is_unavailable_after_the_timeout(fake, make_client) -> None:
    fake.enqueue(Hang(), Hang())
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="no response within") as caught:
        await collect(make_client(first_byte_timeout=0.3, retry_budget=0))
    elapsed = time.perf_counter() - started
    assert 0.25 <= elapsed < 1.5
    assert not isinstance(caught.value, StreamCut)
    assert len(fake.requests) == 1


async def test_hang_then_success_is_retried(fake, make_client) -> None:
    fake.enqueue(Hang())
    events = await collect(make_client(first_byte_timeout=0.2, retry_budget=5))
    assert answer_of(events) == "echo: hello"
    assert len(fake.requests) == 2


async def test_stall_mid_stream_is_a_stream_cut_after_the_read_timeout(fake, make_client) -> None:
    fake.enqueue(Hang("Some words then"))
    seen: list[ModelEvent] = []
    started = time.perf_counter()
    with pytest.raises(StreamCut):
        async for event in make_client(timeout=0.3).stream(HELLO):
            seen.append(event)
    assert time.perf_counter() - started < 1.5
    assert answer_of(seen) == "Some words then"
    assert len(fake.requests) == 1


async def test_connection_refused_is_unavailable(make_client) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="ConnectError"):
        await collect(make_client(base_url=f"http://127.0.0.1:{port}/v1", retry_budget=0.3))
    assert time.perf_counter() - started < 1.5


async def test_failures_log_one_line_without_key_or_traceback(fake, make_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake.enqueue(
        Error(429, RATE_LIMITED, {"Retry-After": "0"}),
        Reply("ok"),
        Error(400, error_body(f"Bad key echo {KEY} in the body", "invalid_request_error")),
        Disconnect("partial"),
    )
    client = make_client()
    assert answer_of(await collect(client)) == "ok"
    with pytest.raises(ModelBadRequest) as caught:
        await collect(client)
    assert KEY not in str(caught.value)
    with pytest.raises(StreamCut):
        await collect(client)
    with pytest.raises(ModelAuthError):
        await collect(make_client(api_key=KEY + "-wrong"))

    assert KEY not in caplog.text
    model_warnings = [
        r for r in caplog.records if r.name == "teambot.model" and r.levelno >= logging.WARNING
    ]
    assert [r.getMessage().split(":")[1].strip() for r in model_warnings] == [
        "ModelBadRequest",
        "StreamCut",
        "ModelAuthError",
    ]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in model_warnings)


async def test_check_sends_a_tiny_request(fake, make_client) -> None:
    description = await make_client().check()
    assert MODEL in description
    assert "echo" in description
    (body,) = fake.requests
    assert body["max_tokens"] <= 5
    assert body["reasoning_effort"] == "none"


async def test_check_raises_typed_errors(fake, make_client) -> None:
    with pytest.raises(ModelAuthError):
        await make_client(api_key="nope").check()


# The SSE framing cases below need byte-exact server output, which FakeMistral (a well-behaved
# server) never produces, so they use httpx's own transport hook to serve the raw bytes.


def raw_stream_client(
    payload: bytes,
    then_raise: Exception | None = None,
    *,
    size: int = 7,
    headers: dict[str, str] | None = None,
) -> MistralClient:
    def respond(request: httpx.Request) -> httpx.Response:
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)]  # split mid-line
        stream = ByteStream(pieces, then_raise)
        response_headers = {"content-type": "text/event-stream", **(headers or {})}
        return httpx.Response(200, headers=response_headers, stream=stream)

    transport = httpx.MockTransport(respond)
    return MistralClient(KEY, "http://mistral.test/v1", MODEL, transport=transport, retry_budget=0)


class ByteStream(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes], then_raise: Exception | None) -> None:
        self.pieces = pieces
        self.then_raise = then_raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.then_raise is not None:
            raise self.then_raise


def sse_chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps({"object": "chat.completion.chunk", "choices": [choice], "usage": usage})


async def test_sse_comments_crlf_and_multiline_data() -> None:
    first = sse_chunk({"content": "Hi"})
    split_at = first.index('"choices"')
    last = sse_chunk({"content": " there"}, "stop", {"prompt_tokens": 5, "completion_tokens": 2})
    payload = (
        ": keep-alive\r\n\r\n"
        f"event: message\r\ndata: {first[:split_at]}\r\ndata: {first[split_at:]}\r\n\r\n"
        f"id: 2\ndata:{last}\n\n"
        "data: [DONE]\r\n\r\n"
    ).encode()
    client = raw_stream_client(payload)
    events = await collect(client)
    await client.aclose()
    assert answer_of(events) == "Hi there"
    assert events[-1] == Finished(Usage(5, 2), "stop")


async def test_nested_thinking_and_unknown_parts() -> None:
    thinking = {
        "type": "thinking",
        "thinking": [{"type": "text", "text": "a"}, [{"type": "text", "text": "b"}]],
    }
    other = {"type": "reference", "reference_ids": [1]}
    payload = "".join(
        f"data: {chunk}\n\n"
        for chunk in (
            sse_chunk({"content": [thinking, other, {"type": "text", "text": "c"}]}),
            sse_chunk({"content": None, "tool_calls": [{"index": 0, "function": {}}]}),
            sse_chunk({"content": "d"}, "stop"),
            "[DONE]",
        )
    ).encode()
    client = raw_stream_client(payload)
    events = await collect(client)
    await client.aclose()
    assert thinking_of(events) == "ab"
    assert answer_of(events) == "cd"
    assert events[-1] == Finished(Usage(), "stop")
    assert not any(isinstance(e, ModelToolCalls) for e in events)  # a call without a name


async def test_error_event_mid_stream_is_a_stream_cut() -> None:
    error = '{"object": "error", "message": "Internal failure", "type": "api_error"}'
    payload = f"data: {sse_chunk({'content': 'partial'})}\n\ndata: {error}\n\n".encode()
    client = raw_stream_client(payload)
    with pytest.raises(StreamCut, match="Internal failure"):
        await collect(client)
    await client.aclose()


async def test_stream_ending_without_finish_is_not_a_clean_answer() -> None:
    client = raw_stream_client(f"data: {sse_chunk({'content': 'half'})}\n\n".encode())
    with pytest.raises(StreamCut):
        await collect(client)
    await client.aclose()


async def test_drop_after_the_final_chunk_still_finishes() -> None:
    last = sse_chunk({"content": "done"}, "stop", {"prompt_tokens": 3, "completion_tokens": 1})
    client = raw_stream_client(f"data: {last}\n\n".encode(), httpx.ReadError("reset by peer"))
    events = await collect(client)
    await client.aclose()
    assert answer_of(events) == "done"
    assert events[-1] == Finished(Usage(3, 1), "stop")


async def test_drop_before_the_final_chunk_is_a_stream_cut() -> None:
    client = raw_stream_client(
        f"data: {sse_chunk({'content': 'half'})}\n\n".encode(), httpx.ReadError("reset by peer")
    )
    with pytest.raises(StreamCut, match="ReadError: reset by peer"):
        await collect(client)
    await client.aclose()


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


# -- SSE framing on raw bytes (bot.sse.SSEDecoder) -----------------------------------------

# Comments, other fields, CRLF / LF / CR line endings, multi-line data, a blank line with no data,
# a BOM, and non-ASCII text (whose UTF-8 bytes a read may split).
MIXED_SSE = (
    b"\xef\xbb\xbf: hello\r\n\r\n"
    b'event: message\r\nid: 1\r\ndata: {"a":\r\ndata:  1}\r\n\r\n'
    b"data: caf\xc3\xa9 \xe2\x80\xa8 ok\n\n\n"
    b"retry: 10\rdata: cr\rdata\r\r"
    b"data: [DONE]\r\n\r\n"
)
MIXED_EVENTS = ['{"a":\n 1}', "caf\u00e9 \u2028 ok", "cr\n", "[DONE]"]


def decode_in_pieces(payload: bytes, size: int) -> list[str]:
    decoder = SSEDecoder()
    events: list[str] = []
    for start in range(0, len(payload), size):
        events += decoder.feed(payload[start : start + size])
    return events + decoder.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10_000])
def test_sse_decoder_gives_the_same_events_whatever_the_read_sizes(size) -> None:
    assert decode_in_pieces(MIXED_SSE, size) == MIXED_EVENTS


def test_sse_decoder_at_every_split_point() -> None:
    for cut in range(len(MIXED_SSE) + 1):
        decoder = SSEDecoder()
        events = decoder.feed(MIXED_SSE[:cut]) + decoder.feed(MIXED_SSE[cut:]) + decoder.flush()
        assert events == MIXED_EVENTS, cut


def test_sse_decoder_does_not_read_a_split_crlf_as_two_line_ends() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []  # CRLF then a CR that may be half of the next
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r\n") == ["a\nb"]


def test_sse_decoder_dispatches_an_event_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"n": 1}\n') == []
    assert decoder.feed(b"\n") == ['{"n": 1}']
    assert decoder.feed(b"data: 2\n\ndata: 3\n\ndata: 4") == ["2", "3"]  # several in one read
    assert decoder.flush() == ["4"]  # a last event without its blank line


def test_sse_decoder_flushes_a_held_back_cr() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.flush() == ["x"]


def test_sse_decoder_replaces_undecodable_bytes() -> None:
    assert decode_in_pieces(b"data: a\xffb\n\n", 4) == ["a\ufffdb"]


async def test_stream_read_one_byte_at_a_time() -> None:
    last = sse_chunk({"content": "é!"}, "stop", {"prompt_tokens": 1, "completion_tokens": 2})
    payload = f"data: {sse_chunk({'content': 'Ça va'})}\r\n\r\ndata: {last}\r\n\r\n".encode()
    client = raw_stream_client(payload, size=1)
    events = await collect(client)
    await client.aclose()
    assert answer_of(events) == "Ça vaé!"
    assert events[-1] == Finished(Usage(1, 2), "stop")


async def test_line_separator_in_the_text_does_not_split_the_event() -> None:
    # str.splitlines() (httpx's aiter_lines) would cut this event at U+2028 and U+0085.
    text = "one\u2028two\x85three"
    done = sse_chunk({"content": ""}, "stop")
    chunk = json.dumps(
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]},
        ensure_ascii=False,
    )
    client = raw_stream_client(f"data: {chunk}\n\ndata: {done}\n\n".encode())
    events = await collect(client)
    await client.aclose()
    assert answer_of(events) == text


async def test_compressed_event_stream_is_decoded() -> None:
    last = sse_chunk({"content": "zipped"}, "stop")
    payload = gzip.compress(f"data: {last}\n\ndata: [DONE]\n\n".encode())
    client = raw_stream_client(payload, headers={"content-encoding": "gzip"})
    events = await collect(client)
    await client.aclose()
    assert answer_of(events) == "zipped"
    assert isinstance(events[-1], Finished)


# -- the client's own network backend (bot.transport) -------------------------------


async def test_a_slow_but_steady_stream_is_not_a_stall(make_client) -> None:
    # 12 tokens 0.05 s apart with a 0.2 s read timeout: the whole reply takes longer than the
    # timeout, but no single read does.
    async with FakeMistral(token_interval=0.05, default_tokens=12) as slow:
        events = await collect(make_client(base_url=slow.base_url, timeout=0.2))
    assert isinstance(events[-1], Finished)
    assert answer_of(events).count(" more") == 12 - 2  # "echo: hello" fills two tokens


@pytest.fixture
def tls_files(tmp_path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_https_through_a_tls_proxy(fake, make_client, tls_files, monkeypatch) -> None:
    """TLS on the client's backend: a loopback TLS terminator in front of FakeMistral."""
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    upstream_port = int(fake.base_url.split(":")[2].split("/")[0])

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def terminate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(terminate, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # httpx's default context trusts it from here
    try:
        client = make_client(base_url=f"https://localhost:{port}/v1")
        assert answer_of(await collect(client)) == "echo: hello"
        assert answer_of(await collect(client)) == "echo: hello"
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(ModelUnavailable, match="ConnectError"):  # certificate not trusted
            await collect(make_client(base_url=f"https://localhost:{port}/v1", retry_budget=0))
    finally:
        server.close()
