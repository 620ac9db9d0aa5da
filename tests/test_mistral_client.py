"""MistralClient against FakeMistral over real loopback HTTP + SSE."""

from __future__ import annotations

import json
import logging
import socket
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
from bot.mistral import MistralClient, retry_after_seconds
from bot.model import AnswerChunk, Finished, ModelEvent, ModelRequest, ThinkingChunk
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


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, '{"city": "Paris"}'])
async def test_tool_call_message_is_tolerated(fake, make_client, arguments) -> None:
    fake.enqueue(ToolCall("weather", arguments))
    events = await collect(make_client())
    assert answer_of(events) == ""
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == "tool_calls"


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


def raw_stream_client(payload: bytes, then_raise: Exception | None = None) -> MistralClient:
    def respond(request: httpx.Request) -> httpx.Response:
        pieces = [payload[i : i + 7] for i in range(0, len(payload), 7)]  # split mid-line
        stream = ByteStream(pieces, then_raise)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

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
