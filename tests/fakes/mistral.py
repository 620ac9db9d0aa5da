"""A loopback fake of Mistral's chat completions API: real HTTP, real SSE.

Tests script what each request gets with `enqueue(Reply(...), ToolCalls(...), Error(...), ...)`;
when nothing is queued the fake answers `"echo: <last user text>"` so isolation tests can tell
conversations apart. Requests are validated the way the real API does it (unknown keys → 422
extra_forbidden, bad `reasoning_effort` → 400 code 3051, optional Bearer check → 401, bad
`tools` / `tool_choice` or tool-call message order → 400, see `check_messages`); a request
rejected by validation does not consume a scripted response.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.fakes.mistral_files import FileEndpoints

ALLOWED_FIELDS = frozenset(
    {
        *("model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop"),
        *("random_seed", "response_format", "tools", "tool_choice", "parallel_tool_calls"),
        *("presence_penalty", "frequency_penalty", "n", "prediction", "reasoning_effort"),
        *("safe_prompt", "metadata", "guardrails", "prompt_cache_key", "service_tier"),
    }
)
EFFORTS = ("none", "high")
CACHE_BLOCK = 64  # tokens: the prefix cache works in whole blocks
CONTEXT_ERROR = (
    "Prompt contains 300000 tokens, too large for model with 262144 maximum context length"
)
ROLES = ("system", "user", "assistant", "tool")
TOOL_CHOICES = ("auto", "none", "any", "required")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CALL_COUNT_ERROR = "Not the same number of function calls and responses"
EMPTY_ASSISTANT_ERROR = "Assistant message must have either content or tool_calls"


@dataclass(frozen=True)
class Reply:
    """A normal streamed answer; `chunks` overrides how `text` is split into tokens."""

    text: str
    thinking: str = ""
    chunks: list[str] | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCall:
    """One function call. `id=None`: the fake makes up a 9-character id (recorded in
    `FakeMistral.tool_call_ids`); `id=""`: the call is sent without an id; else sent as given.
    Enqueued on its own it is a response with just this call."""

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None


@dataclass(frozen=True)
class ToolCalls:
    """A response that calls tools: optional leading `text`, then each call (in parallel, one
    delta chunk per call, `index` 0, 1, ...); finish_reason "tool_calls" with usage on the last
    chunk. `split_arguments` streams each string `arguments` in three pieces, only the first
    with id and name; `disconnect_before_finish` drops the connection after the calls instead
    of sending the finish chunk."""

    calls: Sequence[ToolCall]
    text: str = ""
    split_arguments: bool = False
    usage: dict[str, Any] | None = None
    finish_reason: str = "tool_calls"
    disconnect_before_finish: bool = False


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


Scripted = Reply | ToolCall | ToolCalls | Error | Disconnect | Hang


def error_body(message: Any, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


class Rejected(Exception):
    """A request the real API would refuse with a 400 carrying `body`."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.body = body


def invalid(message: str) -> Rejected:
    return Rejected(error_body(message, "invalid_request_error"))


def out_of_order(message: str) -> Rejected:
    return Rejected(error_body(message, "invalid_request_message_order", "3230"))


def check_tools(body: dict[str, Any]) -> None:
    """Raise `Rejected` for bad `tools`, `tool_choice` or `parallel_tool_calls`."""
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None and not isinstance(tools, list):
        raise invalid("tools must be a list")
    for position, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise invalid(f"tools[{position}]: only function tools are supported here")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise invalid(f"tools[{position}].function: Field required")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise invalid(
                f"tools[{position}].function.name {name!r} must match {TOOL_NAME.pattern}"
            )
        if not isinstance(function.get("parameters", {}), dict):
            raise invalid(f"tools[{position}].function.parameters must be an object")
        if name in names:
            raise invalid(f"tools: duplicate function name {name!r}")
        names.append(name)
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        chosen = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") != "function" or not isinstance(chosen, str):
            raise invalid("tool_choice: expected {type: 'function', function: {name}}")
        if chosen not in names:
            raise invalid(f"tool_choice: no tool named {chosen!r}")
    elif choice is not None and choice not in TOOL_CHOICES:
        raise invalid(f"tool_choice: {choice!r} is not one of {', '.join(TOOL_CHOICES)}")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid("parallel_tool_calls must be a boolean")


def assistant_calls(message: dict[str, Any]) -> dict[str, str]:
    """An assistant message's calls as {id: function name}; raise `Rejected` if malformed."""
    calls = message.get("tool_calls") or []
    if not message.get("content") and not calls:
        raise invalid(EMPTY_ASSISTANT_ERROR)
    if not isinstance(calls, list):
        raise invalid("tool_calls must be a list")
    found: dict[str, str] = {}
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        call_id = call.get("id") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call_id, str) or not call_id:
            raise invalid("tool_calls entries need an id and a function")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise invalid(f"tool call {call_id}: bad function name {name!r}")
        if not isinstance(function.get("arguments"), str | dict):
            raise invalid(f"tool call {call_id}: arguments must be a string or an object")
        if call_id in found:
            raise invalid(f"duplicate tool call id {call_id!r}")
        found[call_id] = name
    return found


def check_messages(messages: Any) -> None:
    """Raise `Rejected` for a message list the API refuses around tool calls.

    An assistant message needs content or tool_calls. One with `tool_calls` must be followed
    at once by one `tool` message per call (matching `tool_call_id` and `name`, string
    `content`) and nothing else in between; a `tool` message must answer the preceding
    assistant message; after the tool messages comes an assistant message or the end of the
    list, never a user message.
    """
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    unanswered: dict[str, str] = {}  # call id -> function name, of the last assistant message
    answering = False  # among the tool messages after an assistant message's tool_calls
    previous = ""
    for position, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(message, dict) or role not in ROLES:
            raise invalid(f"messages[{position}]: role must be one of {', '.join(ROLES)}")
        if role == "tool":
            if not answering:
                raise out_of_order(f"Unexpected role 'tool' after role '{previous}'")
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in unanswered:
                raise invalid(
                    f"messages[{position}]: tool_call_id {call_id!r} does not answer a call "
                    "of the preceding assistant message"
                )
            if message.get("name") != unanswered[call_id]:
                raise invalid(
                    f"messages[{position}]: name {message.get('name')!r} does not match "
                    f"the call's function {unanswered[call_id]!r}"
                )
            if not isinstance(message.get("content"), str):
                raise invalid(f"messages[{position}]: tool content must be a string")
            del unanswered[call_id]
        else:
            if unanswered:
                raise out_of_order(CALL_COUNT_ERROR)
            if previous == "tool" and role != "assistant":
                raise out_of_order(f"Unexpected role '{role}' after role 'tool'")
            unanswered = assistant_calls(message) if role == "assistant" else {}
            answering = bool(unanswered)
        previous = str(role)
    if unanswered:
        raise out_of_order(CALL_COUNT_ERROR)


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
        ignore_stream: bool = False,
    ) -> None:
        self.first_token_delay = first_token_delay
        self.token_interval = token_interval
        self.default_tokens = default_tokens
        self.api_key = api_key
        self.ignore_stream = ignore_stream  # answer with one JSON completion, like some proxies
        self.base_url = ""
        self.tool_call_ids: list[str] = []  # ids the fake sent, in order
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []
        self.client_ports: list[int] = []  # the client's port, per request
        self.first_token_times: list[float] = []
        self.last_token_times: list[float] = []
        self._queue: deque[Scripted] = deque()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        # OCR and transcription (tests/fakes/mistral_files.py)
        self.files = FileEndpoints(lambda: self.api_key)
        # Prompt caching: the last prompt seen under each `prompt_cache_key`.
        self.cached_prompts: dict[str, str] = {}

    def enqueue(self, *responses: Scripted) -> None:
        self._queue.extend(responses)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self.files.install(app)
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
        if not body.get("stream") or self.ignore_stream:
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
        cache_key = body.get("prompt_cache_key")
        if cache_key is not None and not isinstance(cache_key, str):
            problem = {"type": "string_type", "loc": ["body", "prompt_cache_key"]}
            detail = {"detail": [{**problem, "msg": "Input should be a valid string"}]}
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
        try:
            check_tools(body)
            check_messages(body["messages"])
        except Rejected as rejected:
            return web.json_response(rejected.body, status=400)
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
        self, body: dict[str, Any], completion: int, scripted: Reply | ToolCalls | None
    ) -> dict[str, Any]:
        if scripted is not None and scripted.usage is not None:
            return scripted.usage
        text = json.dumps(body.get("messages", []))
        prompt = len(text) // 3
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": self._cached(body, text, prompt)},
        }

    def _cached(self, body: dict[str, Any], text: str, prompt: int) -> int:
        """Prompt tokens served from the cache: the prefix this request shares with the last
        one under the same `prompt_cache_key`, in whole 64-token blocks (none without a key)."""
        key = body.get("prompt_cache_key")
        if not isinstance(key, str):
            return 0
        previous = self.cached_prompts.get(key, "")
        self.cached_prompts[key] = text
        pairs = enumerate(zip(previous, text, strict=False))
        same = next((i for i, (a, b) in pairs if a != b), None)
        shared = (min(len(previous), len(text)) if same is None else same) // 3
        return min(prompt, shared // CACHE_BLOCK * CACHE_BLOCK)

    def _complete(self, body: dict[str, Any], scripted: Scripted) -> web.Response:
        """The non-streaming shape, for callers that do not ask for `stream`."""
        calls = self._tool_calls(scripted)
        if calls is not None:
            tool_calls = [
                {**({"id": call_id} if call_id else {}), "type": "function", **self._function(call)}
                for call, call_id in zip(calls.calls, self._ids(calls), strict=True)
            ]
            answer = {"role": "assistant", "content": calls.text, "tool_calls": tool_calls}
            choice = {"index": 0, "message": answer, "finish_reason": calls.finish_reason}
            count = len(split_tokens(calls.text)) + len(tool_calls)
            return self._completion(body, choice, self._usage(body, count, calls))
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
        return self._completion(body, choice, usage)

    @staticmethod
    def _completion(
        body: dict[str, Any], choice: dict[str, Any], usage: dict[str, Any]
    ) -> web.Response:
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }
        )

    # -- tool calls --------------------------------------------------------------------

    @staticmethod
    def _tool_calls(scripted: Scripted) -> ToolCalls | None:
        if isinstance(scripted, ToolCall):
            return ToolCalls([scripted])
        return scripted if isinstance(scripted, ToolCalls) else None

    def _ids(self, scripted: ToolCalls) -> list[str]:
        """The id sent for each call ("" for none); made-up ids are distinct 9 alphanumerics."""
        ids: list[str] = []
        for call in scripted.calls:
            call_id = call.id
            if call_id is None:
                call_id = f"fk{len(self.tool_call_ids) + 1:07d}"
            if call_id:
                self.tool_call_ids.append(call_id)
            ids.append(call_id)
        return ids

    @staticmethod
    def _function(call: ToolCall, arguments: Any = None) -> dict[str, Any]:
        value = call.arguments if arguments is None else arguments
        return {"function": {"name": call.name, "arguments": value}}

    def _call_deltas(self, scripted: ToolCalls) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for index, (call, call_id) in enumerate(
            zip(scripted.calls, self._ids(scripted), strict=True)
        ):
            pieces: list[Any] = [call.arguments]
            if scripted.split_arguments and isinstance(call.arguments, str):
                third = max(1, len(call.arguments) // 3)
                text = call.arguments
                pieces = [
                    text[:third],
                    *(p for p in (text[third : 2 * third], text[2 * third :]) if p),
                ]
            first: dict[str, Any] = {"index": index, "type": "function"}
            if call_id:
                first["id"] = call_id
            first.update(self._function(call, pieces[0]))
            deltas.append({"content": "", "tool_calls": [first]})
            deltas += [
                {"content": "", "tool_calls": [{"index": index, "function": {"arguments": p}}]}
                for p in pieces[1:]
            ]
        return deltas

    # -- streaming ---------------------------------------------------------------------

    def _deltas(self, scripted: Scripted) -> list[dict[str, Any]]:
        """The content deltas of one response, in order (before the finish chunk)."""
        calls = self._tool_calls(scripted)
        if calls is not None:
            text = [{"content": piece} for piece in split_tokens(calls.text)]
            return text + self._call_deltas(calls)
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
        calls = self._tool_calls(scripted)
        cut = isinstance(scripted, Disconnect) or (
            calls is not None and calls.disconnect_before_finish
        )
        ends_normally = isinstance(scripted, Reply) or (calls is not None and not cut)
        last = deltas.pop() if ends_normally and deltas else {"content": ""}
        # Pace against absolute times so per-chunk overhead does not slow the token rate.
        start = time.perf_counter() + self.first_token_delay
        for index, delta in enumerate(deltas):
            await asyncio.sleep(max(0.0, start + index * self.token_interval - time.perf_counter()))
            if self._closing.is_set():
                return self._abort(request)
            await send(delta)
            mark()
        if cut:
            return self._abort(request)
        if isinstance(scripted, Hang):
            await self._closing.wait()
            return self._abort(request)
        await asyncio.sleep(
            max(0.0, start + len(deltas) * self.token_interval - time.perf_counter())
        )
        count = len(deltas) + (1 if last.get("content") or last.get("tool_calls") else 0)
        scripted_end = scripted if isinstance(scripted, Reply) else calls
        finish = scripted_end.finish_reason if scripted_end is not None else "stop"
        await send(last, finish, self._usage(body, count, scripted_end))
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
