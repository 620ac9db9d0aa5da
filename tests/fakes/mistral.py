"""A loopback fake of Mistral's chat completions API: real HTTP, real SSE.

Tests script what each request gets with `enqueue(Reply(...), Error(...), ...)`; when nothing is
queued the fake answers `"echo: <last user text>"` so isolation tests can tell conversations
apart. Requests are validated the way the real API does it (unknown keys → 422
extra_forbidden, bad `reasoning_effort` → 400 code 3051, optional Bearer check → 401); a
request rejected by validation does not consume a scripted response.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

ALLOWED_FIELDS = frozenset(
    {
        *("model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop"),
        *("random_seed", "response_format", "tools", "tool_choice", "parallel_tool_calls"),
        *("presence_penalty", "frequency_penalty", "n", "prediction", "reasoning_effort"),
        *("safe_prompt", "metadata", "guardrails", "prompt_cache_key", "service_tier"),
    }
)
EFFORTS = ("none", "high")
CONTEXT_ERROR = (
    "Prompt contains 300000 tokens, too large for model with 262144 maximum context length"
)


@dataclass(frozen=True)
class Reply:
    """A normal streamed answer; `chunks` overrides how `text` is split into tokens."""

    text: str
    thinking: str = ""
    chunks: list[str] | None = None
    usage: dict[str, int] | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | str


@dataclass(frozen=True)
class Error:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Disconnect:
    """Stream `after_text`, then drop the connection without finishing the chunked body."""

    after_text: str = "partial answer"


@dataclass(frozen=True)
class Hang:
    """Never answer (empty `after_text`), or stream `after_text` and then go silent."""

    after_text: str = ""


Scripted = Reply | ToolCall | Error | Disconnect | Hang


def error_body(message: Any, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


def split_tokens(text: str) -> list[str]:
    """Token-ish pieces: each word with the whitespace before it."""
    return re.findall(r"\s*\S+|\s+$", text) or ([text] if text else [])


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class FakeMistral:
    def __init__(
        self,
        *,
        first_token_delay: float = 0.0,
        token_interval: float = 0.0,
        default_tokens: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.first_token_delay = first_token_delay
        self.token_interval = token_interval
        self.default_tokens = default_tokens
        self.api_key = api_key
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []
        self.client_ports: list[int] = []  # the client's port, per request
        self.first_token_times: list[float] = []
        self.last_token_times: list[float] = []
        self._queue: deque[Scripted] = deque()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def enqueue(self, *responses: Scripted) -> None:
        self._queue.extend(responses)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        self._closing.set()  # releases hanging handlers so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeMistral:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- request handling --------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.request_times.append(time.perf_counter())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(int(peer[1]) if peer else 0)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(
                error_body("Invalid JSON body", "invalid_request_error"), status=400
            )
        self.requests.append(body)
        rejection = self._validate(request, body)
        if rejection is not None:
            return rejection
        scripted = self._queue.popleft() if self._queue else self._default_reply(body)
        if isinstance(scripted, Error):
            if isinstance(scripted.body, str):
                return web.Response(
                    status=scripted.status, text=scripted.body, headers=scripted.headers
                )
            return web.json_response(
                scripted.body, status=scripted.status, headers=scripted.headers
            )
        if isinstance(scripted, Hang) and not scripted.after_text:
            await self._closing.wait()
            return self._abort(request)
        if not body.get("stream"):
            return self._complete(body, scripted)
        return await self._stream(request, body, scripted)

    def _validate(self, request: web.Request, body: Any) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return web.json_response({"detail": "Unauthorized"}, status=401)
        if not isinstance(body, dict):
            return web.json_response(
                error_body("Body must be an object", "invalid_request_error"), status=422
            )
        problems = [
            {
                "type": "extra_forbidden",
                "loc": ["body", key],
                "msg": "Extra inputs are not permitted",
            }
            for key in body
            if key not in ALLOWED_FIELDS
        ] + [
            {"type": "missing", "loc": ["body", key], "msg": "Field required"}
            for key in ("model", "messages")
            if key not in body
        ]
        if problems:
            detail = {"detail": problems}
            return web.json_response(error_body(detail, "invalid_request_error"), status=422)
        effort = body.get("reasoning_effort")
        if effort is not None and effort not in EFFORTS:
            message = (
                f"reasoning_effort={effort!r} is not supported for this model. "
                "Must be one of (none, high)"
            )
            return web.json_response(
                error_body(message, "invalid_request_invalid_args", "3051"), status=400
            )
        return None

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        users = [
            m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"
        ]
        text = "echo: " + (text_of(users[-1].get("content")) if users else "")
        if self.default_tokens is None:
            return Reply(text)
        n = max(1, self.default_tokens)
        pieces = split_tokens(text)
        if len(pieces) > n:  # keep the whole echo even when it has more words than chunks
            pieces = [*pieces[: n - 1], "".join(pieces[n - 1 :])]
        pieces += [" more"] * (n - len(pieces))
        return Reply("".join(pieces), chunks=pieces)

    def _usage(
        self, body: dict[str, Any], completion: int, scripted: Reply | None
    ) -> dict[str, int]:
        if scripted is not None and scripted.usage is not None:
            return scripted.usage
        prompt = len(json.dumps(body.get("messages", []))) // 3
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _complete(self, body: dict[str, Any], scripted: Scripted) -> web.Response:
        """The non-streaming shape, for callers that do not ask for `stream`."""
        reply = (
            scripted if isinstance(scripted, Reply) else Reply(getattr(scripted, "after_text", ""))
        )
        content: Any = reply.text
        if reply.thinking:
            content = [
                {"type": "thinking", "thinking": [{"type": "text", "text": reply.thinking}]},
                {"type": "text", "text": reply.text},
            ]
        message = {"role": "assistant", "content": content, "tool_calls": None}
        choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason}
        usage = self._usage(body, len(split_tokens(reply.text)), reply)
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }
        )

    # -- streaming ---------------------------------------------------------------------

    def _deltas(self, scripted: Scripted) -> list[dict[str, Any]]:
        """The content deltas of one response, in order (before the finish chunk)."""
        if isinstance(scripted, ToolCall):
            call = {
                "id": "D681PevKs",
                "type": "function",
                "index": 0,
                "function": {"name": scripted.name, "arguments": scripted.arguments},
            }
            return [{"content": "", "tool_calls": [call]}]
        if isinstance(scripted, Disconnect | Hang):
            return [{"content": piece} for piece in split_tokens(scripted.after_text)]
        assert isinstance(scripted, Reply)
        answer = (
            list(scripted.chunks) if scripted.chunks is not None else split_tokens(scripted.text)
        )
        thoughts = split_tokens(scripted.thinking)
        deltas: list[dict[str, Any]] = [
            {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": piece}]}]}
            for piece in thoughts[:-1]
        ]
        if thoughts:  # the closing thinking part travels with the first answer part
            closing = {
                "type": "thinking",
                "thinking": [{"type": "text", "text": thoughts[-1]}],
                "closed": True,
            }
            first = [{"type": "text", "text": answer.pop(0)}] if answer else []
            deltas.append({"content": [closing, *first]})
        deltas += [{"content": piece} for piece in answer]
        return deltas

    async def _stream(
        self, request: web.Request, body: dict[str, Any], scripted: Scripted
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        created = int(time.time())

        async def send(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {
                "id": "cmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        slot: list[int] = []  # this response's index in first/last_token_times

        def mark() -> None:
            now = time.perf_counter()
            if not slot:
                slot.append(len(self.first_token_times))
                self.first_token_times.append(now)
                self.last_token_times.append(now)
            self.last_token_times[slot[0]] = now

        deltas = self._deltas(scripted)
        ends_normally = isinstance(scripted, Reply | ToolCall)
        last = deltas.pop() if ends_normally and deltas else {"content": ""}
        # Pace against absolute times so per-chunk overhead does not slow the token rate.
        start = time.perf_counter() + self.first_token_delay
        for index, delta in enumerate(deltas):
            await asyncio.sleep(max(0.0, start + index * self.token_interval - time.perf_counter()))
            if self._closing.is_set():
                return self._abort(request)
            await send(delta)
            mark()
        if isinstance(scripted, Disconnect):
            return self._abort(request)
        if isinstance(scripted, Hang):
            await self._closing.wait()
            return self._abort(request)
        await asyncio.sleep(
            max(0.0, start + len(deltas) * self.token_interval - time.perf_counter())
        )
        count = len(deltas) + (1 if last.get("content") or last.get("tool_calls") else 0)
        reply = scripted if isinstance(scripted, Reply) else None
        finish = reply.finish_reason if reply is not None else "tool_calls"
        await send(last, finish, self._usage(body, count, reply))
        if count > len(deltas):
            mark()
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _abort(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)
