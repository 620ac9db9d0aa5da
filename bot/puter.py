"""`ModelClient` for Puter's AI driver (TEAMBOT_PROVIDER=puter), billed to the Puter account
whose token is PUTER_AUTH_TOKEN.

One call is `POST {PUTER_API_URL}/drivers/call` with `{"interface": "puter-chat-completion",
"driver": "ai-chat", "method": "complete", "args": {...}}`; a streamed answer comes back as
NDJSON lines typed `text`, `reasoning`, `tool_use` (a whole call with its `input` object),
`usage` (the last line, with `finish_reason`) and `error`. Retries, the first-byte timeout
and HTTP error mapping are `MistralClient`'s; this module only speaks the format.

Puter forwards only messages, model, stream, tools, max_tokens and temperature to Mistral,
so it cannot turn reasoning on (`capabilities.reasoning` is False and `reasoning on` says
so) and cannot be told `tool_choice: none`: the last tool round is asked without tools.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from bot.errors import ModelError, ModelRateLimited, ModelUnavailable
from bot.mistral import (
    MistralClient,
    PendingToolCall,
    Retryable,
    _StreamState,
    message_events,
    parse_usage,
)
from bot.model import (
    AnswerChunk,
    Capabilities,
    ModelEvent,
    ModelRequest,
    ThinkingChunk,
)
from bot.openai_compat import openai_message

log = logging.getLogger("teambot.model")

DRIVER = {"interface": "puter-chat-completion", "driver": "ai-chat", "method": "complete"}
NO_CREDIT = "The Puter account has no credit left; its owner needs to add credit on Puter."
CREDIT_CODES = frozenset({"insufficient_funds", "subscription_required"})
PASSED_EXTRA = ("temperature",)  # of the optional fields, what Puter forwards


class PuterClient(MistralClient):
    provider = "puter"
    capabilities = Capabilities("puter", reasoning=False)

    def __init__(self, auth_token: str, api_url: str, model: str, **options: Any) -> None:
        super().__init__(auth_token, api_url, model, **options)
        self._url = api_url.rstrip("/") + "/drivers/call"

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        args: dict[str, Any] = {k: v for k, v in request.extra.items() if k in PASSED_EXTRA}
        args.update(
            messages=[openai_message(message) for message in request.messages],
            model=self.model,
            stream=True,
            max_tokens=request.max_tokens,
        )
        if request.tools and request.tool_choice != "none":
            args["tools"] = list(request.tools)
        return {**DRIVER, "args": args}

    def _http_request(self, body: dict[str, Any]) -> httpx.Request:
        # Puter's own client sends JSON as text/plain (its server reads `actually=json`).
        return self._client.build_request(
            "POST",
            self._url,
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={"Content-Type": "text/plain;actually=json", "Accept": "application/x-ndjson"},
        )

    async def _stream_events(
        self, chunks: AsyncIterator[bytes], state: _StreamState
    ) -> AsyncGenerator[ModelEvent, None]:
        pending = b""
        async for chunk in chunks:
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                for event in self._line_events(line, state):
                    state.produced = True
                    yield event
        for event in self._line_events(pending, state):  # a last line without its newline
            state.produced = True
            yield event

    def _line_events(self, line: bytes, state: _StreamState) -> list[ModelEvent]:
        if not line.strip():
            return []
        try:
            item = json.loads(line)
        except ValueError:
            log.debug("puter: skipping a non-JSON line")
            return []
        if not isinstance(item, dict):
            return []
        kind = item.get("type")
        if kind == "text" and isinstance(item.get("text"), str) and item["text"]:
            return [AnswerChunk(item["text"])]
        if kind == "reasoning" and isinstance(item.get("reasoning"), str) and item["reasoning"]:
            return [ThinkingChunk(item["reasoning"])]
        if kind == "tool_use":
            state.tool_calls.append(tool_use_call(len(state.tool_calls), item))
        elif kind == "usage":
            state.usage = parse_usage(item.get("usage"))
            reason = item.get("finish_reason")
            default = "tool_calls" if state.tool_calls else "stop"
            state.finish_reason = reason if isinstance(reason, str) and reason else default
        elif kind == "error":
            raise self._stream_error(item, state)
        return []

    def _stream_error(self, item: dict[str, Any], state: _StreamState) -> ModelError | Retryable:
        if error_code(item) in CREDIT_CODES:
            return no_credit(self._redact(describe(item)), 402)
        return self._broken(state, "error in stream: " + describe(item))

    async def _whole_completion(self, response: httpx.Response) -> list[ModelEvent]:
        """The driver's JSON answer: `{"success": true, "result": {...}}` or an error."""
        try:
            payload = json.loads(await response.aread())
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except (ValueError, httpx.HTTPError) as error:
            detail = f"unreadable driver answer ({type(error).__name__})"
            raise Retryable(ModelUnavailable(detail)) from None
        if payload.get("success") is False or "error" in payload:
            if error_code(payload) in CREDIT_CODES:
                raise no_credit(self._redact(describe(payload)), response.status_code)
            raise ModelUnavailable(self._redact("driver error: " + describe(payload)))
        result = payload.get("result")
        result = result if isinstance(result, dict) else {}
        found = result.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        return message_events(message, result.get("usage"), result.get("finish_reason"))

    async def _status_error(self, response: httpx.Response) -> ModelError | Retryable:
        error = await super()._status_error(response)
        if response.status_code == 402 or error_code_of(error) in CREDIT_CODES:
            return no_credit(str(error), response.status_code)
        return error


def tool_use_call(index: int, item: dict[str, Any]) -> PendingToolCall:
    """A `tool_use` line is a whole call; its `input` is an object (or JSON text)."""
    call = PendingToolCall(index)
    call.id = item["id"] if isinstance(item.get("id"), str) else ""
    call.name = item["name"] if isinstance(item.get("name"), str) else ""
    value = item.get("input")
    if isinstance(value, str):
        call.arguments.append(value)
    elif value is not None:
        call.arguments.append(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return call


def error_code(body: dict[str, Any]) -> str:
    """Puter's error code, at the top level or inside `error`."""
    code = body.get("code")
    inner = body.get("error")
    if not code and isinstance(inner, dict):
        code = inner.get("code")
    return str(code) if code else ""


def error_code_of(error: ModelError | Retryable) -> str:
    """The code `api_message` appended to an error's detail ("… (code insufficient_funds)")."""
    text = str(error)
    return next((code for code in CREDIT_CODES if f"(code {code})" in text), "")


def describe(body: dict[str, Any]) -> str:
    inner = body.get("error")
    message = body.get("message") or (inner.get("message") if isinstance(inner, dict) else inner)
    code = error_code(body)
    text = message if isinstance(message, str) and message else json.dumps(body)[:300]
    return f"{text} (code {code})" if code else text


def no_credit(detail: str, status: int) -> ModelError:
    """Out of credit is a spend cap: not retried, and people are told plainly."""
    error = ModelRateLimited(detail, status=status)
    error.user_message = NO_CREDIT
    return error
