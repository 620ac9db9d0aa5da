"""A loopback fake of an OpenAI-compatible chat completions server: real HTTP, real SSE.

One class, four behaviours (`variant`), each as the server's docs describe it:

- "vllm": reasoning asked with top-level `reasoning_effort`, thinking streamed as
  `delta.reasoning`; `chat_template_kwargs` is refused (Mistral tokenizer mode); usage
  only when `stream_options.include_usage` is set, in an extra chunk with no choices.
- "sglang": like vLLM, but thinking as `delta.reasoning_content`.
- "llamacpp": reasoning asked with `chat_template_kwargs.reasoning_effort` (a top-level
  `reasoning_effort` is ignored, as before b10434), thinking as `delta.reasoning_content`,
  usage only with include_usage, `timings` on the last chunk; context overflow is its
  `exceed_context_size_error`.
- "openrouter": reasoning asked with `reasoning.effort`, thinking as `delta.reasoning`,
  `: OPENROUTER PROCESSING` comment lines, usage (with `cost`) on the last chunk always.

Scripted responses are the Mistral fake's (`Reply`, `ToolCall(s)`, `Error`, `Disconnect`)
plus `MidStreamError`. Thinking is only sent when the request turned reasoning on the
variant's way, so a test sees whether the client asked correctly. Tool calls stream the
OpenAI way: a first delta with id, name and empty arguments, then argument pieces.
`usage=False` makes a server that never reports usage.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.fakes.mistral import (
    Disconnect,
    Error,
    Rejected,
    Reply,
    Scripted,
    ToolCall,
    ToolCalls,
    check_messages,
    check_tools,
    split_tokens,
    text_of,
)

VARIANTS = ("vllm", "sglang", "llamacpp", "openrouter")
THINKING_FIELD = {
    "vllm": "reasoning",
    "sglang": "reasoning_content",
    "llamacpp": "reasoning_content",
    "openrouter": "reasoning",
}
OWNER = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llamacpp", "openrouter": "mistralai"}
CONTEXT_ERRORS = {
    "vllm": (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 262144 tokens. However, you "
            "requested 300000 tokens in the messages.",
            "type": "BadRequestError",
            "code": 400,
        },
    ),
    "llamacpp": (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
            }
        },
    ),
}


@dataclass(frozen=True)
class MidStreamError:
    """Stream `after_text`, then an `error` event on the open HTTP 200 stream (OpenRouter)."""

    after_text: str
    message: str = "Provider returned error"
    code: int = 502


Script = Scripted | MidStreamError


def error_response(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status)


class FakeOpenAI:
    def __init__(
        self, variant: str = "vllm", *, api_key: str | None = None, usage: bool = True
    ) -> None:
        assert variant in VARIANTS, variant
        self.variant = variant
        self.api_key = api_key
        self.usage = usage  # False: never reports usage, asked or not
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []  # per request, as sent
        self.models_asked = 0
        self._queue: deque[Script] = deque()
        self._runner: web.AppRunner | None = None

    def enqueue(self, *responses: Script) -> None:
        self._queue.extend(responses)

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        self.models_asked += 1
        data = [{"id": "mistral-small-2603", "object": "model", "owned_by": OWNER[self.variant]}]
        return web.json_response({"object": "list", "data": data})

    # -- validation ----------------------------------------------------------------------

    def _refusal(self, request: web.Request, body: Any) -> web.Response | None:
        auth = request.headers.get("Authorization")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return error_response(401, "Invalid API key", "AuthenticationError")
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return error_response(400, "model and messages are required")
        if self.variant == "vllm" and "chat_template_kwargs" in body:
            return error_response(
                400, "chat_template_kwargs is not supported for Mistral tokenizers"
            )
        if "stream_options" in body and not body.get("stream"):
            return error_response(400, "stream_options can only be set when stream is true")
        effort = self.effort(body)
        if effort is not None and effort not in ("none", "high"):
            return error_response(400, f"reasoning_effort={effort!r} is not supported")
        try:
            check_tools(body)
            check_messages(body["messages"])
            check_images(body["messages"])
        except Rejected as rejected:
            return error_response(400, str(rejected))
        return None

    def effort(self, body: dict[str, Any]) -> Any:
        """The reasoning effort as this server reads it from the request (None: unset)."""
        if self.variant == "openrouter":
            reasoning = body.get("reasoning")
            return reasoning.get("effort") if isinstance(reasoning, dict) else None
        if self.variant == "llamacpp":
            kwargs = body.get("chat_template_kwargs")
            return kwargs.get("reasoning_effort") if isinstance(kwargs, dict) else None
        return body.get("reasoning_effort")

    # -- answering -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.auth_headers.append(request.headers.get("Authorization"))
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "Invalid JSON body")
        self.requests.append(body)
        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        scripted = self._queue.popleft() if self._queue else echo(body)
        if isinstance(scripted, Error):
            if isinstance(scripted.body, str):
                return web.Response(status=scripted.status, text=scripted.body)
            return web.json_response(scripted.body, status=scripted.status)
        return await self._stream(request, body, scripted)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], scripted: Script
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        stream_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        async def send(payload: dict[str, Any]) -> None:
            base = {"id": stream_id, "object": "chat.completion.chunk", "model": body["model"]}
            await response.write(f"data: {json.dumps({**base, **payload})}\n\n".encode())

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        if self.variant == "openrouter":
            await response.write(b": OPENROUTER PROCESSING\n\n")
        await send(choice({"role": "assistant", "content": ""}))
        deltas, finish = self._deltas(body, scripted)
        for delta in deltas:
            await send(choice(delta))
        if isinstance(scripted, Disconnect):
            assert request.transport is not None
            request.transport.close()
            return response
        if isinstance(scripted, MidStreamError):
            error = {"code": scripted.code, "message": scripted.message}
            await send({"error": error, "choices": [choice({}, "error")["choices"][0]]})
            await response.write_eof()
            return response
        usage = self._usage(body, deltas, scripted)
        last = choice({}, finish)
        if self.variant == "llamacpp":
            last["timings"] = {"prompt_n": usage["prompt_tokens"], "predicted_n": len(deltas)}
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        if self.usage and self.variant == "openrouter":
            last["usage"] = {**usage, "cost": 0.0}
        await send(last)
        if self.usage and asked and self.variant != "openrouter":
            await send({"choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _deltas(self, body: dict[str, Any], scripted: Script) -> tuple[list[dict[str, Any]], str]:
        if isinstance(scripted, ToolCall | ToolCalls):
            calls = ToolCalls([scripted]) if isinstance(scripted, ToolCall) else scripted
            text = [{"content": piece} for piece in split_tokens(calls.text)]
            return text + self._call_deltas(calls), calls.finish_reason
        if isinstance(scripted, Disconnect | MidStreamError):
            return [{"content": piece} for piece in split_tokens(scripted.after_text)], "stop"
        assert isinstance(scripted, Reply), scripted
        deltas: list[dict[str, Any]] = []
        if scripted.thinking and self.effort(body) == "high":
            field = THINKING_FIELD[self.variant]
            deltas += [{field: piece} for piece in split_tokens(scripted.thinking)]
        pieces = scripted.chunks if scripted.chunks is not None else split_tokens(scripted.text)
        deltas += [{"content": piece} for piece in pieces]
        return deltas, scripted.finish_reason

    def _call_deltas(self, calls: ToolCalls) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for index, call in enumerate(calls.calls):
            arguments = call.arguments
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            call_id = call.id if call.id is not None else f"chatcmpl-tool-{uuid.uuid4().hex}"
            first = {"index": index, "id": call_id, "type": "function"}
            first["function"] = {"name": call.name, "arguments": ""}
            deltas.append({"tool_calls": [first]})
            third = max(1, len(text) // 3)
            pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in pieces
                if piece
            ]
        return deltas

    @staticmethod
    def _usage(body: dict[str, Any], deltas: list[dict[str, Any]], scripted: Script) -> Any:
        if isinstance(scripted, Reply | ToolCalls) and scripted.usage is not None:
            return scripted.usage
        prompt = len(json.dumps(body["messages"])) // 3
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(deltas),
            "total_tokens": prompt + len(deltas),
        }


def check_images(messages: list[dict[str, Any]]) -> None:
    """OpenAI-compatible servers take an image part's URL as `{"url": ...}` only."""
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                if not (isinstance(image, dict) and isinstance(image.get("url"), str)):
                    raise Rejected({"message": "image_url must be an object with a url"})


def echo(body: dict[str, Any]) -> Reply:
    users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    return Reply("echo: " + (text_of(users[-1].get("content")) if users else ""))
