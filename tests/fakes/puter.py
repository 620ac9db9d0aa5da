"""A loopback fake of Puter's `POST /drivers/call` for the AI chat driver: real HTTP, NDJSON.

As Puter's backend does it (HeyPuter/puter, model-api.md §4): the body is JSON whatever
the Content-Type (puter.js sends `text/plain;actually=json`); the token comes from
`Authorization: Bearer`, or `auth_token` in the body; `driver` must be "ai-chat" (legacy
names get 404 "Driver not found"); only messages, model, stream, tools, max_tokens and
temperature of `args` reach Mistral, the rest is ignored (and recorded in
`ignored_args`). A streamed answer is `application/x-ndjson`: `text` lines, whole
`tool_use` lines, then one `usage` line with `finish_reason`; never `reasoning` for
Mistral. Errors are `{"error", "message", "code"}` bodies: 401 `token_auth_failed`, 402
`insufficient_funds` (with `X-Needs-Upgrade: true`), 404 for an unknown driver.

Scripted responses are the Mistral fake's (`Reply`, `ToolCall(s)`, `Error`, `Disconnect`)
plus `StreamError`. `Reply(usage={})` ends with an empty usage object.
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
    split_tokens,
    text_of,
)

FORWARDED_ARGS = frozenset({"messages", "model", "stream", "tools", "max_tokens", "temperature"})
NO_CREDIT_BODY = {
    "error": "Payment Required",
    "message": "Insufficient funds: this request needs more credit than the account has.",
    "code": "insufficient_funds",
}


@dataclass(frozen=True)
class StreamError:
    """Stream `after_text`, then an `error` line (an upstream failure mid-answer)."""

    after_text: str
    message: str = "upstream provider unavailable"
    code: str = "upstream_provider_unavailable"


Script = Scripted | StreamError


def failure(status: int, code: str, message: str) -> web.Response:
    title = {401: "Unauthorized", 402: "Payment Required", 404: "Not Found"}.get(status, "Error")
    return web.json_response({"error": title, "message": message, "code": code}, status=status)


def no_credit() -> Error:
    """The 402 Puter answers when the account's credit is used up."""
    return Error(402, NO_CREDIT_BODY, {"X-Needs-Upgrade": "true"})


class FakePuter:
    def __init__(self, *, token: str = "puter-token-0123456789") -> None:
        self.token = token
        self.base_url = ""
        self.calls: list[dict[str, Any]] = []  # whole request bodies
        self.content_types: list[str] = []
        self.ignored_args: list[str] = []
        self._queue: deque[Script] = deque()
        self._runner: web.AppRunner | None = None

    def enqueue(self, *responses: Script) -> None:
        self._queue.extend(responses)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Each call's `args`: what Puter hands its Mistral provider (as the other fakes)."""
        return [call.get("args", {}) for call in self.calls]

    async def __aenter__(self) -> FakePuter:
        app = web.Application()
        app.router.add_post("/drivers/call", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refusal(self, request: web.Request, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return failure(400, "bad_request", "body must be a JSON object")
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        if (token or body.get("auth_token")) != self.token:
            return failure(401, "token_auth_failed", "Authentication failed")
        driver = body.get("driver")
        if driver is not None and driver != "ai-chat":
            return failure(404, "entity_not_found", f"Driver not found: {driver}")
        if body.get("interface") != "puter-chat-completion" or body.get("method") != "complete":
            return failure(400, "bad_request", "unknown interface or method")
        args = body.get("args")
        if not isinstance(args, dict) or not isinstance(args.get("messages"), list):
            return failure(400, "field_missing", "args.messages is required")
        self.ignored_args += sorted(set(args) - FORWARDED_ARGS)
        try:
            check_messages(args["messages"])  # what Mistral behind it would refuse
        except Rejected as rejected:
            return failure(400, "upstream_bad_request", str(rejected))
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.content_types.append(request.headers.get("Content-Type", ""))
        try:
            body = json.loads(await request.text())
        except ValueError:
            return failure(400, "bad_request", "body is not JSON")
        self.calls.append(body)
        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        args = body["args"]
        scripted = self._queue.popleft() if self._queue else echo(args)
        if isinstance(scripted, Error):
            return web.json_response(
                scripted.body, status=scripted.status, headers=scripted.headers
            )
        lines = self._lines(args, scripted)
        if not args.get("stream"):
            return web.json_response({"success": True, "result": whole(lines)})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in lines:
            await response.write(json.dumps(line).encode() + b"\n")
        if isinstance(scripted, Disconnect):
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    def _lines(self, args: dict[str, Any], scripted: Script) -> list[dict[str, Any]]:
        if isinstance(scripted, Disconnect | StreamError):
            lines = text_lines(scripted.after_text)
            if isinstance(scripted, StreamError):
                lines.append({"type": "error", "message": scripted.message, "code": scripted.code})
            return lines
        if isinstance(scripted, ToolCall | ToolCalls):
            calls = ToolCalls([scripted]) if isinstance(scripted, ToolCall) else scripted
            lines = text_lines(calls.text)
            for call in calls.calls:
                value = call.arguments
                arguments = json.loads(value) if isinstance(value, str) else value
                call_id = call.id if call.id is not None else uuid.uuid4().hex[:9]
                lines.append(
                    {"type": "tool_use", "id": call_id, "name": call.name, "input": arguments}
                )
            usage = calls.usage if calls.usage is not None else usage_of(args, len(lines))
            return [*lines, {"type": "usage", "usage": usage, "finish_reason": "tool_calls"}]
        assert isinstance(scripted, Reply), scripted
        pieces = scripted.chunks if scripted.chunks is not None else split_tokens(scripted.text)
        lines = [{"type": "text", "text": piece} for piece in pieces]
        usage = scripted.usage if scripted.usage is not None else usage_of(args, len(lines))
        return [*lines, {"type": "usage", "usage": usage, "finish_reason": scripted.finish_reason}]


def text_lines(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": piece} for piece in split_tokens(text)]


def usage_of(args: dict[str, Any], completion: int) -> dict[str, int]:
    """Puter's metered usage shape (OpenAIUtil.extractMeteredUsage)."""
    prompt = len(json.dumps(args["messages"])) // 3
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": 0}


def whole(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed `result` for the same lines."""
    text = "".join(line["text"] for line in lines if line["type"] == "text")
    calls = [
        {
            "id": line["id"],
            "type": "function",
            "function": {"name": line["name"], "arguments": json.dumps(line["input"])},
        }
        for line in lines
        if line["type"] == "tool_use"
    ]
    last = lines[-1] if lines and lines[-1]["type"] == "usage" else {}
    message = {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}
    return {
        "message": message,
        "usage": last.get("usage", {}),
        "finish_reason": last.get("finish_reason", "stop"),
    }


def echo(args: dict[str, Any]) -> Reply:
    users = [m for m in args["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    return Reply("echo: " + (text_of(users[-1].get("content")) if users else ""))
