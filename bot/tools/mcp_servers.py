"""Tools from MCP servers: the `mcpServers` file named by TEAMBOT_MCP_CONFIG.

`load_servers` reads the file (the common Claude Desktop / Cursor format: stdio servers
with `command`/`args`/`env`/`cwd`, streamable HTTP servers with `url`/`headers`, each
optionally limited by `allowedTools`). `McpServers` keeps one connection per server and
offers the tools of those currently connected as `server__tool`.

Each server lives in its own long-lived task, because the SDK's context managers hold
anyio cancel scopes that must be entered and left in the same task. A server that
cannot start, hangs while starting or dies later costs one log line and is retried with
backoff; nothing here ever blocks start-up or a reply. Log lines and status reasons
never contain header or environment values.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TextIO, TypeAlias

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from bot import __version__
from bot.errors import ConfigError
from bot.tools import Tool, ToolContext, ToolError, ToolSpec

__all__ = [
    "CONFIG_VARIABLE",
    "McpServers",
    "McpTool",
    "ServerConfig",
    "ServerStatus",
    "load_servers",
]

CONFIG_VARIABLE = "TEAMBOT_MCP_CONFIG"
log = logging.getLogger("teambot.mcp")

Transport = Literal["stdio", "http"]
State = Literal["connecting", "connected", "failed"]
Item: TypeAlias = SessionMessage | Exception

# Mistral function names: [A-Za-z0-9_-]{1,64}. The server prefix is kept short so the
# tool's own name keeps most of the 64 characters.
NAME_LIMIT = 64
PREFIX_LIMIT = 24
SEPARATOR = "__"
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_TRANSPORT_KEYS = {"stdio": "stdio", "http": "http", "streamable-http": "http", "sse": "sse"}
# A connection that lasted this long was healthy: its loss restarts the backoff.
STABLE_AFTER = 60.0
REASON_LIMIT = 300
PING_TIMEOUT = 5.0
_LIST_PAGES_LIMIT = 100


# ---------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ServerConfig:
    """One entry of `mcpServers`. `prefix` is the sanitised, unique tool-name prefix."""

    name: str
    prefix: str
    transport: Transport
    command: str = ""
    args: tuple[str, ...] = ()
    # Values are secrets as far as we know: kept out of repr, logs and reasons.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    url: str = field(default="", repr=False)  # may carry a token in its query
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    allowed_tools: frozenset[str] | None = None
    unsupported: str = ""  # why this entry is never connected ("" = supported)

    def secrets(self) -> list[str]:
        """Strings that must never appear in a log line or a status reason."""
        values = [*self.env.values(), *self.headers.values()]
        if "?" in self.url:
            values.append(self.url.split("?", 1)[1])
        return [value for value in values if len(value) >= 4]


def load_servers(path: str | Path) -> list[ServerConfig]:
    """Parse an `mcpServers` JSON file; any problem is one ConfigError line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    servers = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict):
        raise _bad(f'{path} needs an "mcpServers" object mapping names to servers')
    configs: list[ServerConfig] = []
    used: set[str] = set()
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            raise _bad(f"server {name!r} must be an object")
        if entry.get("disabled") is True:  # Cline / Roo style switch-off
            continue
        prefix = _unique(_sanitise(name, PREFIX_LIMIT) or "mcp", used, PREFIX_LIMIT)
        used.add(prefix)
        configs.append(_parse_entry(name, prefix, entry))
    return configs


def _bad(message: str) -> ConfigError:
    return ConfigError(CONFIG_VARIABLE, message)


def _parse_entry(name: str, prefix: str, entry: dict[str, Any]) -> ServerConfig:
    kind = _declared_transport(name, entry)
    allowed = _string_list(name, entry, "allowedTools")
    allowed_tools = frozenset(allowed) if "allowedTools" in entry else None
    if kind == "sse":
        reason = "the legacy SSE transport is not supported; use the server's streamable HTTP URL"
        return ServerConfig(name, prefix, "http", unsupported=reason)
    has_command, has_url = "command" in entry, "url" in entry
    if has_command == has_url:
        raise _bad(f"server {name!r} needs either a command (stdio) or a url (HTTP)")
    if kind == "stdio" and not has_command:
        raise _bad(f"server {name!r} is declared stdio but has no command")
    if kind == "http" and not has_url:
        raise _bad(f"server {name!r} is declared HTTP but has no url")
    if has_command:
        return _parse_stdio(name, prefix, entry, allowed_tools)
    return _parse_http(name, prefix, entry, allowed_tools)


def _declared_transport(name: str, entry: dict[str, Any]) -> str | None:
    declared: str | None = None
    for key in ("type", "transport"):
        value = entry.get(key)
        if value is None:
            continue
        kind = _TRANSPORT_KEYS.get(str(value).strip().lower()) if isinstance(value, str) else None
        if kind is None:
            raise _bad(
                f"server {name!r}: {key} must be stdio, http, streamable-http or sse "
                f"(got {value!r})"
            )
        declared = kind
    return declared


def _parse_stdio(
    name: str, prefix: str, entry: dict[str, Any], allowed: frozenset[str] | None
) -> ServerConfig:
    command = entry["command"]
    if not isinstance(command, str) or not command.strip():
        raise _bad(f"server {name!r}: command must be a non-empty string")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise _bad(f"server {name!r}: cwd must be a string")
    return ServerConfig(
        name,
        prefix,
        "stdio",
        command=command.strip(),
        args=tuple(_string_list(name, entry, "args")),
        env=_string_map(name, entry, "env"),
        cwd=os.path.expanduser(cwd) if cwd else None,
        allowed_tools=allowed,
    )


def _parse_http(
    name: str, prefix: str, entry: dict[str, Any], allowed: frozenset[str] | None
) -> ServerConfig:
    url = entry["url"]
    if not isinstance(url, str) or not url.strip().startswith(("http://", "https://")):
        raise _bad(f"server {name!r}: url must be an http(s) URL")
    return ServerConfig(
        name,
        prefix,
        "http",
        url=url.strip(),
        headers=_string_map(name, entry, "headers"),
        allowed_tools=allowed,
    )


def _string_list(name: str, entry: dict[str, Any], key: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(f"server {name!r}: {key} must be a list of strings")
    return value


def _string_map(name: str, entry: dict[str, Any], key: str) -> dict[str, str]:
    value = entry.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        # Never echo the values: they are usually credentials.
        raise _bad(f"server {name!r}: {key} must be an object of strings")
    return value


def _sanitise(name: str, limit: int) -> str:
    return _NOT_NAME.sub("_", name).strip("_")[:limit]


def _unique(candidate: str, used: set[str], limit: int) -> str:
    """`candidate`, or a variant with a numeric suffix that is not in `used`."""
    result, number = candidate, 2
    while result in used:
        suffix = f"_{number}"
        result, number = candidate[: limit - len(suffix)] + suffix, number + 1
    return result


def offered_name(prefix: str, tool: str, used: set[str]) -> str:
    """`prefix__tool` as a valid, unique Mistral function name."""
    base = f"{prefix}{SEPARATOR}{_sanitise(tool, NAME_LIMIT) or 'tool'}"
    if len(base) <= NAME_LIMIT and base not in used:
        return base
    # Too long or clashing after sanitising: a short hash of the real name disambiguates.
    digest = hashlib.sha1(tool.encode()).hexdigest()[:8]
    return _unique(f"{base[: NAME_LIMIT - 9]}_{digest}", used, NAME_LIMIT)


# ---------------------------------------------------------------------------
# Tool results


def result_text(result: types.CallToolResult) -> str:
    """The text the model reads: text parts joined, other parts summarised."""
    texts: list[str] = []
    others: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            texts.append(block.text)
        else:
            others.append(_summary(block))
    if not texts and result.structured_content is not None:
        texts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(texts + others)


def _summary(block: Any) -> str:
    if isinstance(block, types.ImageContent):
        return f"[image: {block.mime_type}]"
    if isinstance(block, types.AudioContent):
        return f"[audio: {block.mime_type}]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return f"[resource: {resource.uri}]\n{resource.text}"
        return f"[resource: {resource.uri} ({resource.mime_type or 'binary'})]"
    return f"[{getattr(block, 'type', 'content')}]"


@dataclass(frozen=True)
class McpTool:
    """One MCP tool behind our `Tool` protocol."""

    spec: ToolSpec
    server_name: str
    real_name: str
    _call: Callable[[str, dict[str, Any]], Awaitable[str]] = field(repr=False)

    def activity(self, args: dict[str, Any], ctx: ToolContext) -> str:
        return f"Asking {self.server_name} ({self.real_name})…"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> str:
        return await self._call(self.real_name, args)


def _parameters(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The tool's input schema as Mistral `parameters` (always an object schema)."""
    parameters = dict(schema or {})
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    return parameters


# ---------------------------------------------------------------------------
# Status


@dataclass(frozen=True)
class ServerStatus:
    name: str
    transport: Transport
    state: State
    tools: tuple[str, ...] = ()  # offered names (server__tool)
    error: str = ""  # why it failed, or why the last attempt failed


class _Stream(Protocol):
    """The read side the SDK transports hand us (anyio or context-carrying stream)."""

    async def receive(self) -> Item: ...

    async def aclose(self) -> None: ...


class _WatchedStream:
    """Passes a transport's read stream to the session and notes when it ends.

    The SDK has no public "connection closed" signal; the read stream ending (a stdio
    server exiting, an HTTP transport giving up) is the earliest sign we can see.
    """

    def __init__(self, inner: _Stream, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        # The HTTP transport's stream carries the sender's contextvars; keep them visible.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Item:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Item:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._on_end()
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _StderrPipe:
    """A stdio server's stderr: each line at DEBUG, the last few kept for failure reasons.

    The SDK hands the `errlog` file to the subprocess as its stderr; by default that is
    our terminal, where a chatty server would interleave with our own log lines.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self.tail: deque[str] = deque(maxlen=3)
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._read_fd = read_fd
        self.writer: TextIO = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115

    def close_writer(self) -> None:
        """After the spawn the child has its own copy; ours would keep EOF from coming."""
        if not self.writer.closed:
            self.writer.close()

    async def pump(self) -> None:
        buffer = b""
        while True:
            await anyio.wait_readable(self._read_fd)
            try:
                chunk = os.read(self._read_fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                self._line(line)
            buffer = buffer[-65536:]  # a line without end must not grow without bound
        if buffer:
            self._line(buffer)

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            self.tail.append(line)
            log.debug("%s stderr: %s", self.server, line)

    def close(self) -> None:
        self.close_writer()
        with contextlib.suppress(OSError):
            os.close(self._read_fd)


class _ConnectTimeout(Exception):
    """The server did not finish starting within connect_timeout."""


class _ConnectionLost(Exception):
    """A connected server went away (or refused our session)."""


# ---------------------------------------------------------------------------
# One server


class _Server:
    """One configured server: its connection task, its state and its tools."""

    def __init__(self, config: ServerConfig, owner: McpServers) -> None:
        self.config = config
        self.owner = owner
        self.state: State = "connecting"
        self.error = ""
        self.tools: list[McpTool] = []
        self.session: ClientSession | None = None
        self.settled = asyncio.Event()  # set once the first attempt has an outcome
        self.scope: anyio.CancelScope | None = None  # made in the task: anyio needs a loop
        self.task: asyncio.Task[None] | None = None
        self._lost: anyio.Event | None = None
        self._lost_reason = ""
        self._was_connected = False
        self._stderr: _StderrPipe | None = None
        self._failures = 0

    # -- lifecycle ----------------------------------------------------------

    async def run(self) -> None:
        # Stopped through this scope, not task.cancel(): the SDK's shielded shutdown of
        # a stdio server (which terminates the process) may not survive a native cancel.
        with anyio.CancelScope() as self.scope:
            if self.config.unsupported:
                self._fail(self.config.unsupported)
                return
            while True:
                await self._attempt()
                await anyio.sleep(self._next_delay())

    def stop(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
        elif self.task is not None:
            self.task.cancel()  # not started yet: nothing is open, a plain cancel is safe

    async def _attempt(self) -> None:
        started = time.monotonic()
        self._was_connected = False
        try:
            await self._connect_and_serve()
        except Exception as exc:
            self._withdraw()
            # A crash-looping server keeps doubling its delay; a long healthy run resets it.
            if self._was_connected and time.monotonic() - started >= STABLE_AFTER:
                self._failures = 0
            self._fail(self._reason(exc), lost=self._was_connected)

    def _next_delay(self) -> float:
        delay = self.owner.retry_initial * 2 ** min(self._failures - 1, 30)
        return float(min(delay, self.owner.retry_max))

    def _fail(self, reason: str, *, lost: bool = False) -> None:
        self._failures += 1
        repeated = not lost and self.state == "failed" and reason == self.error
        self.state, self.error = "failed", reason
        self.settled.set()
        retry = "" if self.config.unsupported else f"; retrying in {self._next_delay():g} s"
        what = "lost its connection" if lost else "is unavailable"
        # One line per new problem; the same failure on every retry goes to DEBUG.
        level = logging.DEBUG if repeated else logging.WARNING
        log.log(level, "MCP server %s %s: %s%s", self.config.name, what, reason, retry)

    # -- one connection -----------------------------------------------------

    async def _connect_and_serve(self) -> None:
        lost = self._lost = anyio.Event()
        self._lost_reason = ""
        timeout = self.owner.connect_timeout
        # The deadline covers spawning/connecting, initialize and listing the tools. It
        # is a scope around the whole connection (not fail_after around the setup) so
        # every SDK context is entered and left inside it, in this task.
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
            async with AsyncExitStack() as stack:
                read, write = await self._open_transport(stack)
                session = await stack.enter_async_context(
                    ClientSession(
                        _WatchedStream(read, lost.set),
                        write,
                        client_info=types.Implementation(name="teambot", version=__version__),
                    )
                )
                await session.initialize()
                listed = await _list_tools(session)
                scope.deadline = math.inf  # connected: from here on only a loss ends it
                self._connected(session, listed)
                await lost.wait()
                raise _ConnectionLost(self._lost_reason or "the server closed the connection")
        if scope.cancelled_caught:
            raise _ConnectTimeout(f"no answer within {timeout:g} s while starting")

    async def _open_transport(self, stack: AsyncExitStack) -> tuple[Any, Any]:
        if self.config.transport == "stdio":
            return await self._open_stdio(stack)
        client = httpx2.AsyncClient(
            headers=dict(self.config.headers),
            # The read timeout must outlast a long tool call and the idle event stream.
            timeout=httpx2.Timeout(self.owner.connect_timeout, read=300.0),
        )
        await stack.enter_async_context(client)
        streams = await stack.enter_async_context(
            streamable_http_client(self.config.url, http_client=client)
        )
        return _pair(streams)

    async def _open_stdio(self, stack: AsyncExitStack) -> tuple[Any, Any]:
        config = self.config
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=dict(config.env), cwd=config.cwd
        )
        if sys.platform == "win32":  # no pollable pipes there: stderr stays the SDK default
            return _pair(await stack.enter_async_context(stdio_client(params)))
        pipe = self._stderr = _StderrPipe(config.name)
        stack.callback(pipe.close)
        streams = await stack.enter_async_context(stdio_client(params, errlog=pipe.writer))
        pipe.close_writer()
        group = await stack.enter_async_context(anyio.create_task_group())
        # Cancel the pump before the group is left: its EOF only comes once the SDK
        # has stopped the process, which happens later in this unwinding.
        stack.callback(group.cancel_scope.cancel)
        group.start_soon(pipe.pump)
        return _pair(streams)

    def _connected(self, session: ClientSession, listed: list[types.Tool]) -> None:
        self.session = session
        self.tools = self._adapt(listed)
        self.state, self.error = "connected", ""
        self._was_connected = True
        self.settled.set()
        log.info(
            "MCP server %s connected (%s, %d tools)",
            self.config.name,
            self.config.transport,
            len(self.tools),
        )

    def _withdraw(self, reason: str = "") -> None:
        """Stop offering this server's tools (the connection is over or about to be)."""
        self.session = None
        self.tools = []
        if self.state == "connected":
            self.state, self.error = "failed", reason

    def _adapt(self, listed: list[types.Tool]) -> list[McpTool]:
        allowed = self.config.allowed_tools
        used: set[str] = set()
        tools: list[McpTool] = []
        for tool in listed:
            if allowed is not None and tool.name not in allowed:
                continue
            name = offered_name(self.config.prefix, tool.name, used)
            used.add(name)
            description = tool.description or tool.title or f"{tool.name} ({self.config.name})"
            spec = ToolSpec(name, description, _parameters(tool.input_schema))
            tools.append(McpTool(spec, self.config.name, tool.name, self.call))
        return tools

    # -- calls --------------------------------------------------------------

    async def call(self, real_name: str, args: dict[str, Any]) -> str:
        session = self.session
        if session is None or self.state != "connected":
            raise ToolError(f"The MCP server {self.config.name} is not available right now.")
        try:
            result = await session.call_tool(
                real_name, args, read_timeout_seconds=self.owner.call_timeout
            )
        except MCPError as exc:
            raise await self._call_error(session, exc) from None
        except (RuntimeError, ValidationError) as exc:
            # Results the SDK refuses: structured content not matching the tool's output
            # schema, input requests, extension results, malformed replies.
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ToolError(
                f"{self.config.name} returned a result teambot cannot use: {self._redact(first)}"
            ) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, httpx2.HTTPError):
            self._mark_lost("a call could not reach the server")
            raise ToolError(
                f"The MCP server {self.config.name} is not available right now."
            ) from None
        text = result_text(result)
        if result.is_error:
            raise ToolError(text or f"{real_name} failed without saying why")
        return text

    async def _call_error(self, session: ClientSession, exc: MCPError) -> ToolError:
        name = self.config.name
        if exc.code == types.REQUEST_TIMEOUT:
            return ToolError(f"{name} did not answer within {self.owner.call_timeout:g} s.")
        # An error can also mean our session is gone (an HTTP server that restarted
        # answers "Session not found" to everything): a ping tells us which it is.
        if exc.code == types.CONNECTION_CLOSED:
            self._mark_lost("the server closed the connection")
            return ToolError(f"The MCP server {name} is not available right now.")
        if not await _answers_ping(session):
            self._mark_lost("the server no longer accepts our session")
            return ToolError(f"The MCP server {name} is not available right now.")
        return ToolError(f"{name} refused the call: {self._redact(exc.message)}")

    def _mark_lost(self, reason: str) -> None:
        """A call found the connection dead: end it so the task reconnects."""
        if self._lost is not None and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()
            self._withdraw(reason)  # at once: the task may take a moment to unwind

    # -- reasons ------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        return self._redact(_describe(_leaf(exc), self.config, self._stderr_tail()))[:REASON_LIMIT]

    def _stderr_tail(self) -> str:
        return self._stderr.tail[-1] if self._stderr and self._stderr.tail else ""

    def _redact(self, text: str) -> str:
        for secret in self.config.secrets():
            text = text.replace(secret, "[redacted]")
        return text

    def status(self) -> ServerStatus:
        return ServerStatus(
            name=self.config.name,
            transport=self.config.transport,
            state=self.state,
            tools=tuple(tool.spec.name for tool in self.tools),
            error=self.error,
        )


def _pair(streams: Sequence[Any]) -> tuple[Any, Any]:
    """(read, write): mcp 2.x yields exactly these; 1.x HTTP added a session-id getter."""
    return streams[0], streams[1]


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    """Every page of tools/list."""
    result = await session.list_tools()
    tools = list(result.tools)
    for _ in range(_LIST_PAGES_LIMIT):  # a server repeating its cursor must not loop us
        if not result.next_cursor:
            break
        params = types.PaginatedRequestParams(cursor=result.next_cursor)
        result = await session.list_tools(params=params)
        tools.extend(result.tools)
    return tools


async def _answers_ping(session: ClientSession) -> bool:
    """False only when the server definitely refuses the session; a slow answer is fine."""
    with anyio.move_on_after(PING_TIMEOUT):
        try:
            await session.send_ping()
        except (MCPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        except httpx2.HTTPError:
            return False
    return True


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from SDK task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException, config: ServerConfig, stderr: str) -> str:
    said = f" (last stderr line: {stderr})" if stderr else ""
    if isinstance(exc, _ConnectTimeout | _ConnectionLost):
        return f"{exc}{said}"
    if isinstance(exc, FileNotFoundError) and config.transport == "stdio":
        return f"command not found: {config.command}"
    if isinstance(exc, PermissionError) and config.transport == "stdio":
        return f"permission denied running {config.command}"
    if isinstance(exc, MCPError) and exc.code == types.CONNECTION_CLOSED:
        return f"the server closed the connection while starting{said}"
    if isinstance(exc, MCPError):
        return f"protocol error: {exc.message}"
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx2.HTTPError):
        # str() of some httpx errors names the URL, which may carry a token.
        return f"cannot connect ({type(exc).__name__}: {exc})".replace(config.url, "<url>")
    return f"{type(exc).__name__}: {exc}{said}"


# ---------------------------------------------------------------------------
# All servers


class McpServers:
    """Every configured MCP server, connected in the background.

    Build it anywhere; call `start()` from the running event loop and `aclose()` on
    the way out. Timeouts are in seconds; the defaults suit production, tests shrink them.
    """

    def __init__(
        self,
        configs: Sequence[ServerConfig],
        *,
        connect_timeout: float = 10.0,
        call_timeout: float = 300.0,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout  # a backstop; callers apply their own, shorter one
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.close_timeout = close_timeout
        self._servers = [_Server(config, self) for config in configs]

    def start(self) -> None:
        """Begin connecting every server; returns at once."""
        for server in self._servers:
            if server.task is None:
                server.task = asyncio.create_task(server.run(), name=f"mcp:{server.config.name}")

    def tools(self) -> list[Tool]:
        """The tools of the servers connected right now."""
        return [tool for server in self._servers for tool in server.tools]

    def status(self) -> list[ServerStatus]:
        return [server.status() for server in self._servers]

    # A timeout argument, not anyio.fail_after: `teambot check` wants a yes/no answer.
    async def wait_ready(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until every server has connected or failed once; False on timeout."""
        waits = [server.settled.wait() for server in self._servers]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop every connection (stdio servers are terminated); bounded by close_timeout."""
        tasks = [server.task for server in self._servers if server.task is not None]
        for server in self._servers:
            server.stop()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.close_timeout)
        for task in pending:
            # Last resort: a shutdown stuck past its own bounded waits is abandoned.
            log.warning("MCP server task %s did not stop in time", task.get_name())
            task.cancel()
