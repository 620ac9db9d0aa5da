"""`ModelClient` for Mistral's native chat completions API (streaming SSE over httpx).

Retry policy: 429, 5xx, connect errors and timeouts are retried with full-jitter exponential
backoff, but only until the first thinking or answer chunk has been yielded; after that a broken
stream raises `StreamCut` so the engine can keep the partial text instead of repeating it.

Function calls are gathered from `delta.tool_calls` while the stream runs and handed over as one
`ToolCalls` event right before `Finished`, so a stream that only calls tools yields nothing until
its finish chunk and is retried whole if it breaks before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bot.errors import (
    ContextTooLong,
    ModelAuthError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelUnavailable,
    StreamCut,
)
from bot.model import (
    AnswerChunk,
    Capabilities,
    Finished,
    ModelEvent,
    ModelRequest,
    ThinkingChunk,
    ToolCall,
    ToolCalls,
)
from bot.sse import SSEDecoder, sse_bytes
from bot.text import repair_value
from bot.transport import LoopTransport
from bot.types import Usage

log = logging.getLogger("teambot.model")

# Optional request fields the API accepts; anything else would be a 422 extra_forbidden.
EXTRA_FIELDS = frozenset(
    {
        *("temperature", "top_p", "stop", "random_seed", "response_format", "tools"),
        *("tool_choice", "parallel_tool_calls", "presence_penalty", "frequency_penalty"),
        *("n", "prediction", "safe_prompt", "metadata", "guardrails", "prompt_cache_key"),
        "service_tier",
    }
)
RETRY_AFTER_CAP = 120.0
CONTEXT_TOO_LONG = re.compile(r"too large for model|context length", re.IGNORECASE)
MAX_DETAIL = 300
# Mistral's tool-call ids are 9 alphanumerics; we make one up for a call that came without.
TOOL_CALL_ID_LENGTH = 9
TOOL_CALL_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Placeholders some OpenAI-style servers put in `id` on continuation chunks.
NO_ID = frozenset({"", "null", "none", "undefined"})

Sleep = Callable[[float], Awaitable[None]]
# Asked before each retry (and again after its wait) with the failed attempt's error;
# False ends the call with that error. bot/breaker.py sets it so one outage is seen at
# its first failed request and retries stop when the endpoint's breaker opens.
RetryGate = Callable[[ModelError], bool]


class _Retryable(Exception):
    """An attempt failed before any output in a way worth trying again."""

    def __init__(self, error: ModelError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


Retryable = _Retryable  # for the other providers built on this client (bot/openai_compat.py)


@dataclass
class PendingToolCall:
    """One function call being put together from stream deltas."""

    index: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)  # JSON text pieces, in arrival order


@dataclass
class _StreamState:
    produced: bool = False  # a thinking or answer chunk has been yielded
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[PendingToolCall] = field(default_factory=list)


# A streamed reply holds its connection until the last token, so the pool bounds how
# many conversations are answered at once; at httpx's default of 100, the 101st
# waited for a whole answer to finish (bench/discord.py at N=500).
MAX_STREAMS = 1000
# Idle connections kept for reuse. httpcore's pool scans every connection for each
# request, so many idle ones slow a burst down (encode/httpcore#1035; bench/client.py:
# burst after burst 164 ms p50 at 100 kept, 41 ms at 4): keep a few, which is what saves
# a TLS handshake on the common one-question-at-a-time path.
KEEPALIVE = 8
DRAIN_TIMEOUT = 5.0  # seconds to wait for the body's end after [DONE]


class MistralClient:
    """Streams chat completions from Mistral; raises only `bot.errors.ModelError` subclasses.

    The other providers (bot/openai_compat.py, bot/puter.py) reuse its retries, streaming
    and error mapping, and override the wire format: `request_body`, `_http_request`,
    `_stream_events`, `_whole_completion`, `_status_error`.
    """

    provider = "mistral"  # names the provider in logs
    capabilities = Capabilities("mistral", prompt_cache=True)

    def __init__(
        self,
        api_key: str,
        base_url: str,
        model: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        retry_budget: float = 20.0,
        first_byte_timeout: float = 120.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.model = model
        self._api_key = api_key
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._retry_budget = retry_budget
        self._first_byte_timeout = first_byte_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self.retry_gate: RetryGate | None = None
        self._draining: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=MAX_STREAMS, max_keepalive_connections=KEEPALIVE)
        self._client = httpx.AsyncClient(
            transport=transport or LoopTransport(limits),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=limits,  # for proxies configured by the environment
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        )

    async def aclose(self) -> None:
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
        await self._client.aclose()

    async def check(self, *, retry: bool = True, within: float | None = None) -> str:
        """Send one tiny request and describe the result, for `teambot check`.

        `retry=False` makes a single attempt (a retryable failure is final) and
        `within` bounds the whole check in seconds, so a model that is down is
        reported at once instead of after the retry budget.
        """
        started = time.perf_counter()
        answer: list[str] = []
        usage = Usage()
        request = ModelRequest(
            messages=[{"role": "user", "content": "Reply with just: OK"}], max_tokens=5
        )
        events = self.stream(request) if retry else self._once(self.request_body(request))
        try:
            async with asyncio.timeout(within), contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, AnswerChunk):
                        answer.append(event.text)
                    elif isinstance(event, Finished):
                        usage = event.usage
        except TimeoutError:
            raise ModelUnavailable(f"no answer within {within:g} s") from None
        elapsed = time.perf_counter() - started
        reply = "".join(answer).strip()[:40]
        return (
            f"{self.model} answered {reply!r} in {elapsed:.1f} s "
            f"({usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens)"
        )

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        dropped = sorted(set(request.extra) - EXTRA_FIELDS)
        if dropped:
            log.warning(
                "%s: not sending fields the API does not accept: %s", self.provider, dropped
            )
        body = {key: value for key, value in request.extra.items() if key in EXTRA_FIELDS}
        body.update(
            model=self.model,
            messages=request.messages,
            max_tokens=request.max_tokens,
            # Sent explicitly because the API's default when omitted is undocumented.
            reasoning_effort="high" if request.reasoning else "none",
            stream=True,
        )
        if request.tools:
            body.update(
                tools=list(request.tools),
                tool_choice=request.tool_choice,
                parallel_tool_calls=True,
            )
        if request.cache_key:
            # Requests of one conversation share a prefix; the key steers them to the
            # same cache (usage.prompt_tokens_details.cached_tokens says what it saved).
            body["prompt_cache_key"] = request.cache_key
        return body

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        body = self.request_body(request)
        started = time.monotonic()
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    async with contextlib.aclosing(self._attempt(body)) as events:
                        async for event in events:
                            yield event
                    return
                except _Retryable as failure:
                    delay = self._retry_delay(failure, attempt, time.monotonic() - started)
                    if delay is None or not self._may_retry(failure.error):
                        elapsed = time.monotonic() - started
                        raise self._final(failure.error, attempt, elapsed) from None
                    log.info(
                        "%s: %s; retry %d in %.1f s", self.provider, failure.error, attempt, delay
                    )
                    await self._sleep(delay)
                    if not self._may_retry(failure.error):
                        elapsed = time.monotonic() - started
                        raise self._final(failure.error, attempt, elapsed) from None
        except ModelError as error:
            log.warning("%s: %s: %s", self.provider, type(error).__name__, error)
            raise

    def _may_retry(self, error: ModelError) -> bool:
        return self.retry_gate is None or self.retry_gate(error)

    async def _once(self, body: dict[str, Any]) -> AsyncGenerator[ModelEvent, None]:
        """One attempt without retries: a retryable failure is raised as it is."""
        try:
            async with contextlib.aclosing(self._attempt(body)) as events:
                async for event in events:
                    yield event
        except _Retryable as failure:
            raise failure.error from None

    # -- one attempt ---------------------------------------------------------------------

    def _http_request(self, body: dict[str, Any]) -> httpx.Request:
        return self._client.build_request(
            "POST", self._url, json=body, headers={"Accept": "text/event-stream"}
        )

    async def _attempt(self, body: dict[str, Any]) -> AsyncGenerator[ModelEvent, None]:
        request = self._http_request(body)
        try:
            async with asyncio.timeout(self._first_byte_timeout):
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            detail = f"no response within {self._first_byte_timeout:g} s"
            raise _Retryable(ModelUnavailable(detail)) from None
        except httpx.HTTPError as error:
            raise _Retryable(ModelUnavailable(self._transport_detail(error))) from None
        chunks: AsyncGenerator[bytes, None] | None = None
        done = False
        try:
            if response.status_code != 200:
                raise await self._status_error(response)
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                for event in await self._whole_completion(response):
                    yield event
                return
            state = _StreamState()
            chunks = sse_bytes(response)
            try:
                async with contextlib.aclosing(self._stream_events(chunks, state)) as events:
                    async for event in events:
                        yield event
            except httpx.HTTPError as error:
                if state.finish_reason is None:
                    raise self._broken(state, self._transport_detail(error)) from None
            finished = self._finish(state)
            calls = complete_tool_calls(state.tool_calls)
            if calls is not None:
                yield calls
            yield finished
            done = True
        finally:
            if done and chunks is not None:
                self._drain(chunks, response)
            else:
                if chunks is not None:
                    await chunks.aclose()
                await response.aclose()

    def _drain(self, chunks: AsyncGenerator[bytes, None], response: httpx.Response) -> None:
        """Read the body's end after [DONE] in the background, so the connection (and its TLS
        session) serves the next request instead of being closed."""

        async def drain() -> None:
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    async for _ in chunks:
                        pass
            except (TimeoutError, httpx.HTTPError):
                pass  # not reusable: closing it below is all there is to do
            finally:
                await chunks.aclose()
                await response.aclose()

        task = asyncio.create_task(drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _stream_events(
        self, chunks: AsyncIterator[bytes], state: _StreamState
    ) -> AsyncGenerator[ModelEvent, None]:
        decoder = SSEDecoder()
        async for chunk in chunks:
            for data in decoder.feed(chunk):
                if data.strip() == "[DONE]":
                    return
                for event in self._parse_event(data, state):
                    state.produced = True
                    yield event
        for data in decoder.flush():  # tolerate a last event without its blank line
            if data.strip() == "[DONE]":
                return
            for event in self._parse_event(data, state):
                state.produced = True
                yield event

    def _parse_event(self, data: str, state: _StreamState) -> list[ModelEvent]:
        try:
            chunk = json.loads(data)
        except ValueError:
            log.debug("mistral: skipping a non-JSON SSE event")
            return []
        if "\\u" in data:  # an escape may decode to a lone surrogate: repair it here
            chunk = repair_value(chunk)
        if not isinstance(chunk, dict):
            return []
        if chunk.get("object") == "error" or "error" in chunk:
            raise self._broken(state, "error event in stream: " + api_message(chunk))
        return list(chunk_events(chunk, state))

    async def _whole_completion(self, response: httpx.Response) -> list[ModelEvent]:
        """A proxy that ignored `stream` sent one JSON completion; accept it."""
        try:
            payload = repair_value(json.loads(await response.aread()))
            choice = (payload.get("choices") or [{}])[0]
            return message_events(
                choice.get("message") or {}, payload.get("usage"), choice.get("finish_reason")
            )
        except (ValueError, AttributeError, IndexError, httpx.HTTPError) as error:
            detail = f"unreadable JSON completion ({type(error).__name__})"
            raise _Retryable(ModelUnavailable(detail)) from None

    def _finish(self, state: _StreamState) -> Finished:
        if state.finish_reason is None:
            raise self._broken(state, "stream ended before the model finished")
        if state.finish_reason == "error":
            raise self._broken(state, "the model reported finish_reason=error")
        return Finished(state.usage or Usage(), state.finish_reason)

    def _broken(self, state: _StreamState, detail: str) -> ModelError | _Retryable:
        if state.produced:
            return StreamCut(self._redact(detail))
        return _Retryable(ModelUnavailable(self._redact(detail)))

    async def _status_error(self, response: httpx.Response) -> ModelError | _Retryable:
        status = response.status_code
        try:
            text = (await response.aread()).decode("utf-8", "replace")
        except httpx.TransportError:
            text = ""
        detail = self._redact(f"HTTP {status}: {api_message(text)}")
        if status in (401, 403):
            return ModelAuthError(detail, status=status)
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status == 429:
            return _Retryable(ModelRateLimited(detail, status=status), retry_after)
        if status >= 500 or status == 408:
            return _Retryable(ModelUnavailable(detail, status=status), retry_after)
        if status == 400 and CONTEXT_TOO_LONG.search(detail):
            return ContextTooLong(detail, status=status)
        return ModelBadRequest(detail, status=status)

    # -- retry policy --------------------------------------------------------------------

    def _retry_delay(self, failure: _Retryable, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        The budget bounds the total; a Retry-After (up to the cap) is honoured even past it,
        once, because the server knows better than our backoff when it will take us again.
        """
        remaining = self._retry_budget - elapsed
        if remaining <= 0:
            return None
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        backoff = min(random.uniform(0, ceiling), remaining)
        if failure.retry_after is None:
            return backoff
        if failure.retry_after > RETRY_AFTER_CAP:
            return None
        # The backoff floor stops a "Retry-After: 0" from turning into a tight request loop.
        return max(failure.retry_after, backoff)

    def _final(self, error: ModelError, attempts: int, elapsed: float) -> ModelError:
        if attempts == 1:
            return error
        detail = f"{error} (gave up after {attempts} attempts in {elapsed:.1f} s)"
        return type(error)(detail, status=error.status)

    def _transport_detail(self, error: httpx.HTTPError) -> str:
        kind = type(error).__name__
        text = str(error)
        return self._redact(f"{kind}: {text}" if text else kind)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


# -- wire format helpers (pure functions) ----------------------------------------------------


def chunk_events(chunk: dict[str, Any], state: _StreamState) -> Iterator[ModelEvent]:
    """Thinking/answer events of one `chat.completion.chunk`; records finish, usage and
    tool-call deltas (those become one `ToolCalls` at the end, see `complete_tool_calls`)."""
    usage = parse_usage(chunk.get("usage"))
    if usage is not None:
        state.usage = usage
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        if isinstance(delta, dict):
            thinking = reasoning_text(delta)
            if thinking:
                yield ThinkingChunk(thinking)
            yield from content_events(delta.get("content"))
            add_tool_call_deltas(state.tool_calls, delta.get("tool_calls"))
        if choice.get("finish_reason"):
            state.finish_reason = str(choice["finish_reason"])


def message_events(message: dict[str, Any], usage: Any, finish_reason: Any) -> list[ModelEvent]:
    """The events of one whole (not streamed) assistant message: thinking, answer text,
    tool calls, then `Finished` with its usage and finish reason."""
    thinking = reasoning_text(message)
    events: list[ModelEvent] = [ThinkingChunk(thinking)] if thinking else []
    events += content_events(message.get("content"))
    calls = complete_tool_calls(message_tool_calls(message.get("tool_calls")))
    if calls is not None:
        events.append(calls)
    return [*events, Finished(parse_usage(usage) or Usage(), str(finish_reason or "stop"))]


def reasoning_text(delta: dict[str, Any]) -> str:
    """Thinking that OpenAI-style servers put beside the content instead of inside it:
    `reasoning_content` (SGLang, llama.cpp) or `reasoning` (vLLM, OpenRouter). Servers
    moving from one name to the other send both with the same text, so one is taken."""
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def content_events(content: Any) -> Iterator[ModelEvent]:
    """`content` is a string, or a list of parts where `thinking` parts nest text parts."""
    if isinstance(content, str):
        if content:
            yield AnswerChunk(content)
        return
    if not isinstance(content, list):
        return
    for part in content:
        if isinstance(part, str):
            if part:
                yield AnswerChunk(part)
        elif isinstance(part, dict) and part.get("type") == "thinking":
            text = flatten_text(part.get("thinking"))
            if text:
                yield ThinkingChunk(text)
        elif isinstance(part, dict) and part.get("type") == "text":
            answer = part.get("text")
            if isinstance(answer, str) and answer:
                yield AnswerChunk(answer)


def add_tool_call_deltas(pending: list[PendingToolCall], deltas: Any) -> None:
    """Merge one chunk's `delta.tool_calls` into `pending` (calls are keyed by `index`)."""
    if not isinstance(deltas, list):
        return
    for delta in deltas:
        if isinstance(delta, dict):
            merge_tool_call(_pending_for(pending, delta), delta)


def _pending_for(pending: list[PendingToolCall], delta: dict[str, Any]) -> PendingToolCall:
    """The call a delta continues, or a new one.

    Normally that is the call with the same `index`. Some OpenAI-style servers give every
    call index 0, or none at all; a different id then still means a different call.
    """
    call_id = real_id(delta.get("id"))
    index = delta.get("index")
    if isinstance(index, int) and not isinstance(index, bool):
        same = [call for call in pending if call.index == index]
        if same and not (call_id and same[-1].id and call_id != same[-1].id):
            return same[-1]
    elif call_id:
        known = next((call for call in pending if call.id == call_id), None)
        if known is not None:
            return known
        index = max((call.index for call in pending), default=-1) + 1
    elif pending:
        return pending[-1]  # a continuation piece without index or id
    else:
        index = 0
    call = PendingToolCall(index)
    pending.append(call)
    return call


def merge_tool_call(call: PendingToolCall, delta: dict[str, Any]) -> None:
    """Take the id and name when first present; append the arguments piece.

    `arguments` is usually JSON text (pieces are concatenated) but may be an object, which is
    written out once as compact JSON.
    """
    call_id = real_id(delta.get("id"))
    if call_id and not call.id:
        call.id = call_id
    function = delta.get("function")
    if not isinstance(function, dict):
        return
    name = function.get("name")
    if isinstance(name, str) and name and not call.name:
        call.name = name
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        call.arguments.append(arguments)
    elif arguments is not None:
        call.arguments.append(json.dumps(arguments, ensure_ascii=False, separators=(",", ":")))


def message_tool_calls(value: Any) -> list[PendingToolCall]:
    """The `tool_calls` of a whole (non-streamed) message: one call per entry, in order."""
    pending: list[PendingToolCall] = []
    for position, item in enumerate(value if isinstance(value, list) else []):
        if isinstance(item, dict):
            call = PendingToolCall(position)
            merge_tool_call(call, item)
            pending.append(call)
    return pending


def complete_tool_calls(
    pending: list[PendingToolCall], new_id: Callable[[], str] | None = None
) -> ToolCalls | None:
    """The finished calls ordered by index, or None when there are none.

    A call without an id gets a generated one; one without a name cannot be run or answered,
    so it is dropped. Empty arguments become "{}".
    """
    make_id = new_id or generate_tool_call_id
    calls: list[ToolCall] = []
    for call in sorted(pending, key=lambda call: call.index):
        if not call.name:
            log.warning("mistral: dropping a tool call without a function name")
            continue
        arguments = "".join(call.arguments) or "{}"
        calls.append(ToolCall(id=call.id or make_id(), name=call.name, arguments=arguments))
    return ToolCalls(tuple(calls)) if calls else None


def real_id(value: Any) -> str:
    """A tool-call id as sent, or "" for none or a placeholder. Longer ids are kept as they are."""
    if not isinstance(value, str) or value.strip().lower() in NO_ID:
        return ""
    return value


def generate_tool_call_id() -> str:
    return "".join(random.choices(TOOL_CALL_ID_ALPHABET, k=TOOL_CALL_ID_LENGTH))


def flatten_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(flatten_text(item) for item in value)
    if isinstance(value, dict):
        return flatten_text(value.get("text", value.get("thinking", "")))
    return ""


def parse_usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    try:
        prompt = int(value.get("prompt_tokens") or 0)
        completion = int(value.get("completion_tokens") or 0)
        details = value.get("prompt_tokens_details")
        # OpenAI's place for it, which Mistral uses; Puter flattens it to `cached_tokens`.
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        cached = int(cached or value.get("cached_tokens") or 0)
    except (TypeError, ValueError, AttributeError):
        return None
    return Usage(prompt, completion, max(0, min(cached, prompt)))


def api_message(body: str | dict[str, Any]) -> str:
    """One readable line from an error body, whatever shape Mistral (or a proxy) used."""
    payload: Any = body
    if isinstance(body, str):
        try:
            payload = json.loads(body)
        except ValueError:
            return _one_line(body) or "(empty body)"
    if isinstance(payload, dict):
        found = next(
            (payload[k] for k in ("message", "detail", "error") if payload.get(k)), payload
        )
        text = _describe(found)
        code = payload.get("code")
        return _one_line(f"{text} (code {code})" if code else text)
    return _one_line(_describe(payload))


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # pydantic-style validation errors
        return "; ".join(_describe(item) for item in value)
    if isinstance(value, dict):
        if "msg" in value:
            where = ".".join(str(part) for part in value.get("loc", []))
            return f"{where}: {value['msg']}" if where else str(value["msg"])
        for key in ("detail", "message", "error"):
            if key in value:
                return _describe(value[key])
    return json.dumps(value)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
