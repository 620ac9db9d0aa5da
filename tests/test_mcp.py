"""MCP servers as tools: config parsing, and real SDK servers over stdio and HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp import types

from bot.config import load_settings
from bot.errors import ConfigError
from bot.tools import Tool, ToolError
from bot.tools.mcp_servers import (
    NAME_LIMIT,
    McpServers,
    ServerConfig,
    load_servers,
    offered_name,
    result_text,
)

FAKE = str(Path(__file__).parent / "fakes" / "mcp_server.py")
PY = sys.executable
CTX: Any = None  # the MCP tools never look at the ToolContext
SECRET = "sekrit-token-9876"


def write_config(tmp_path: Path, servers: dict[str, Any]) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def configs(tmp_path: Path, servers: dict[str, Any]) -> list[ServerConfig]:
    return load_servers(write_config(tmp_path, servers))


def fake_stdio(**extra: Any) -> dict[str, Any]:
    return {"command": PY, "args": [FAKE, "stdio"], **extra}


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {tool.spec.name: tool for tool in tools}


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def make_servers() -> AsyncIterator[Callable[..., McpServers]]:
    """McpServers with test-sized timeouts, started; all closed after the test."""
    made: list[McpServers] = []

    def factory(configs: list[ServerConfig], **options: Any) -> McpServers:
        options = {"connect_timeout": 5.0, "retry_initial": 0.2, "retry_max": 1.0, **options}
        servers = McpServers(configs, **options)
        servers.start()
        made.append(servers)
        return servers

    yield factory
    for servers in made:
        await servers.aclose()


# ---------------------------------------------------------------------------
# Configuration


def test_load_servers_reads_stdio_and_http_entries(tmp_path: Path) -> None:
    result = configs(
        tmp_path,
        {
            "files": {
                "type": "stdio",
                "command": "npx",
                "args": ["-y", "server"],
                "env": {"KEY": SECRET},
                "cwd": "/tmp",
            },
            "my remote.server!": {
                "transport": "streamable-http",
                "url": "https://example.com/mcp",
                "headers": {"Authorization": f"Bearer {SECRET}"},
                "allowedTools": ["search"],
            },
            "files!": {"type": "http", "url": "http://localhost:1/mcp"},
            "old": {"type": "sse", "url": "http://localhost:1/sse"},
            "off": {"command": "x", "disabled": True},
        },
    )
    files, remote, clash, old = result
    assert (files.name, files.prefix, files.transport) == ("files", "files", "stdio")
    assert (files.command, files.args, files.cwd) == ("npx", ("-y", "server"), "/tmp")
    assert files.env == {"KEY": SECRET} and files.allowed_tools is None
    assert (remote.prefix, remote.transport, remote.url) == (
        "my_remote_server",
        "http",
        "https://example.com/mcp",
    )
    assert remote.allowed_tools == frozenset({"search"})
    assert clash.prefix == "files_2"  # sanitised to a clash, then made unique
    assert old.unsupported and "SSE" in old.unsupported
    assert SECRET not in repr(result)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON (Expecting property name"),
        ("[]", '"mcpServers" object'),
        ('{"servers": {}}', '"mcpServers" object'),
        ('{"mcpServers": {"a": []}}', "server 'a' must be an object"),
        ('{"mcpServers": {"a": {}}}', "needs either a command (stdio) or a url"),
        ('{"mcpServers": {"a": {"command": "x", "url": "http://h"}}}', "either a command"),
        ('{"mcpServers": {"a": {"command": ""}}}', "command must be a non-empty string"),
        ('{"mcpServers": {"a": {"command": "x", "args": "-v"}}}', "args must be a list"),
        ('{"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}', "env must be an object"),
        ('{"mcpServers": {"a": {"url": "ftp://h"}}}', "url must be an http(s) URL"),
        ('{"mcpServers": {"a": {"url": "http://h", "headers": []}}}', "headers must be"),
        ('{"mcpServers": {"a": {"url": "http://h", "type": "ws"}}}', "type must be stdio"),
        ('{"mcpServers": {"a": {"url": "http://h", "type": "stdio"}}}', "declared stdio"),
        ('{"mcpServers": {"a": {"command": "x", "type": "http"}}}', "declared HTTP"),
        ('{"mcpServers": {"a": {"command": "x", "allowedTools": "t"}}}', "allowedTools must"),
    ],
)
def test_load_servers_rejects_bad_files(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "mcp.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_servers(path)
    assert caught.value.variable == "TEAMBOT_MCP_CONFIG"
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_settings_read_the_servers_of_teambot_mcp_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"a": {"command": "x"}})
    assert load_settings({}).mcp_servers == ()
    [config] = load_settings({"TEAMBOT_MCP_CONFIG": str(path)}).mcp_servers
    assert config.command == "x"


def test_offered_names_are_valid_unique_function_names() -> None:
    used: set[str] = set()
    names = []
    for real in ["search", "search!", "a.b/c", "x" * 100, "x" * 100 + "y", "über"]:
        name = offered_name("srv", real, used)
        used.add(name)
        names.append(name)
    assert names[0] == "srv__search"
    assert names[1].startswith("srv__search_") and len(names[1]) == 20  # clash: hash suffix
    assert names[2] == "srv__a_b_c"
    assert names[3] != names[4] and len(names[3]) == NAME_LIMIT  # cut, with a hash suffix
    assert names[5] == "srv__ber"
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= NAME_LIMIT
        assert all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in name), name


def test_result_text_summarises_non_text_parts() -> None:
    mixed = types.CallToolResult(
        content=[
            types.TextContent(text="one"),
            types.ImageContent(data="AA==", mime_type="image/png"),
            types.AudioContent(data="AA==", mime_type="audio/wav"),
            types.EmbeddedResource(
                resource=types.TextResourceContents(uri="file:///a.txt", text="inside")
            ),
            types.TextContent(text="two"),
        ]
    )
    assert result_text(mixed) == (
        "one\ntwo\n[image: image/png]\n[audio: audio/wav]\n[resource: file:///a.txt]\ninside"
    )
    structured = types.CallToolResult(content=[], structured_content={"n": 1})
    assert result_text(structured) == '{"n": 1}'


# ---------------------------------------------------------------------------
# Real servers


async def test_stdio_server_tools(tmp_path: Path, make_servers: Callable[..., McpServers]) -> None:
    servers = make_servers(configs(tmp_path, {"fake": fake_stdio()}))
    assert await servers.wait_ready(10)
    [status] = servers.status()
    assert (status.state, status.transport, status.error) == ("connected", "stdio", "")
    tools = by_name(servers.tools())
    assert set(status.tools) == set(tools) >= {"fake__add", "fake__echo", "fake__fail"}

    add = tools["fake__add"]
    assert add.spec.description == "Add two whole numbers."
    assert add.spec.parameters["required"] == ["a", "b"]
    assert add.spec.schema()["function"]["name"] == "fake__add"
    assert add.activity({"a": 1}, CTX) == "Asking fake (add)…"
    assert await add.run({"a": 2, "b": 3}, CTX) == "5"
    assert await tools["fake__echo"].run({"text": "héllo"}, CTX) == "héllo"
    assert await tools["fake__picture"].run({}, CTX) == "a pixel\n[image: image/png]"
    assert await tools["fake__data"].run({}, CTX) == '{"answer": 42}'
    with pytest.raises(ToolError, match="this tool always fails"):
        await tools["fake__fail"].run({}, CTX)
    with pytest.raises(ToolError, match="validation error"):
        await add.run({"a": "x"}, CTX)


async def test_allowed_tools_limit_what_is_offered(
    tmp_path: Path, make_servers: Callable[..., McpServers]
) -> None:
    servers = make_servers(configs(tmp_path, {"f": fake_stdio(allowedTools=["echo", "nope"])}))
    assert await servers.wait_ready(10)
    assert [tool.spec.name for tool in servers.tools()] == ["f__echo"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_http_server(port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    process = subprocess.Popen(
        [PY, FAKE, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, "the fake HTTP server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            assert time.monotonic() < deadline, "the fake HTTP server did not listen"
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    process, url = start_http_server()
    yield url
    stop(process)


async def test_streamable_http_server_gets_headers(
    tmp_path: Path, http_url: str, make_servers: Callable[..., McpServers]
) -> None:
    entry = {"type": "http", "url": http_url, "headers": {"X-Test-Token": SECRET}}
    servers = make_servers(configs(tmp_path, {"remote": entry}))
    assert await servers.wait_ready(10)
    [status] = servers.status()
    assert (status.state, status.transport) == ("connected", "http")
    tools = by_name(servers.tools())
    assert await tools["remote__add"].run({"a": 20, "b": 22}, CTX) == "42"
    assert await tools["remote__whoami"].run({}, CTX) == SECRET
    with pytest.raises(ToolError, match="always fails"):
        await tools["remote__fail"].run({}, CTX)


async def test_broken_servers_fail_alone_without_blocking(
    tmp_path: Path,
    http_url: str,
    make_servers: Callable[..., McpServers],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="teambot.mcp")
    dead_port = free_port()
    servers_config = {
        "good": fake_stdio(),
        "missing": {"command": "/nonexistent/mcp-server", "env": {"TOKEN": SECRET}},
        "exits": {"command": PY, "args": ["-c", "import sys; sys.exit('no config found')"]},
        "hangs": {"command": PY, "args": ["-c", "import time; time.sleep(60)"]},
        "nobody": {"url": f"http://127.0.0.1:{dead_port}/mcp?key={SECRET}"},
        "old": {"type": "sse", "url": "http://127.0.0.1:1/sse"},
    }
    began = time.monotonic()
    servers = make_servers(configs(tmp_path, servers_config), connect_timeout=2)
    assert time.monotonic() - began < 0.1  # start() only schedules
    assert {s.state for s in servers.status()} == {"connecting"}
    assert servers.tools() == []

    # The good server is usable while the hanging one is still being waited for.
    await eventually(lambda: servers.status()[0].state == "connected")
    assert servers.status()[3].state == "connecting"
    assert await by_name(servers.tools())["good__add"].run({"a": 1, "b": 1}, CTX) == "2"

    assert await servers.wait_ready(10)
    status = {s.name: s for s in servers.status()}
    assert status["good"].state == "connected"
    for name in ("missing", "exits", "hangs", "nobody", "old"):
        assert status[name].state == "failed" and status[name].tools == (), name
    assert status["missing"].error == "command not found: /nonexistent/mcp-server"
    assert "while starting" in status["exits"].error
    assert "no config found" in status["exits"].error  # the server's stderr, kept for us
    assert status["hangs"].error == "no answer within 2 s while starting"
    assert status["nobody"].error.startswith("cannot connect")
    assert "not supported" in status["old"].error
    assert {tool.spec.name.split("__")[0] for tool in servers.tools()} == {"good"}

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 5, warnings  # one line per broken server
    assert all(SECRET not in line for line in caplog.messages)
    assert all(SECRET not in s.error for s in servers.status())
    assert any("fake MCP server starting" in line for line in caplog.messages)  # DEBUG stderr

    began = time.monotonic()
    await servers.aclose()
    assert time.monotonic() - began < 4


async def test_server_that_dies_is_reported_and_reconnected(
    tmp_path: Path, make_servers: Callable[..., McpServers]
) -> None:
    servers = make_servers(configs(tmp_path, {"fake": fake_stdio()}), retry_initial=0.3)
    assert await servers.wait_ready(10)
    tools = by_name(servers.tools())
    with pytest.raises(ToolError, match="fake is not available right now"):
        await tools["fake__die"].run({}, CTX)
    await eventually(lambda: servers.status()[0].state == "failed")
    assert servers.tools() == []
    with pytest.raises(ToolError, match="not available right now"):
        await tools["fake__add"].run({"a": 1, "b": 2}, CTX)  # a stale tool object

    await eventually(lambda: servers.status()[0].state == "connected")
    assert await by_name(servers.tools())["fake__add"].run({"a": 1, "b": 2}, CTX) == "3"
    assert await tools["fake__add"].run({"a": 2, "b": 2}, CTX) == "4"  # old objects work again


async def test_http_server_that_goes_away_or_restarts(
    tmp_path: Path, make_servers: Callable[..., McpServers]
) -> None:
    process, url = start_http_server()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        servers = make_servers(configs(tmp_path, {"web": {"url": url}}))
        assert await servers.wait_ready(10)
        add = by_name(servers.tools())["web__add"]
        assert await add.run({"a": 1, "b": 2}, CTX) == "3"

        stop(process)  # gone: the call cannot connect
        with pytest.raises(ToolError, match="web is not available right now"):
            await add.run({"a": 1, "b": 2}, CTX)
        await eventually(lambda: servers.status()[0].state == "failed")

        process, _ = start_http_server(port)  # back: a retry connects again
        await eventually(lambda: servers.status()[0].state == "connected")
        assert await add.run({"a": 2, "b": 2}, CTX) == "4"

        stop(process)  # restarted behind our back: our session id is unknown there
        process, _ = start_http_server(port)
        with pytest.raises(ToolError, match="web is not available right now"):
            await add.run({"a": 1, "b": 2}, CTX)
        await eventually(lambda: servers.status()[0].state == "connected")
        assert await add.run({"a": 3, "b": 2}, CTX) == "5"
    finally:
        stop(process)


async def test_stuck_call_times_out(
    tmp_path: Path, make_servers: Callable[..., McpServers]
) -> None:
    servers = make_servers(configs(tmp_path, {"fake": fake_stdio()}), call_timeout=0.5)
    assert await servers.wait_ready(10)
    slow = by_name(servers.tools())["fake__slow"]
    with pytest.raises(ToolError, match=r"did not answer within 0\.5 s"):
        await slow.run({"seconds": 30}, CTX)
    assert await slow.run({"seconds": 0.01}, CTX) == "slept 0.01"  # still connected


async def test_aclose_stops_a_hanging_server_quickly(tmp_path: Path) -> None:
    hang = {"command": PY, "args": ["-c", "import time; time.sleep(60)"]}
    servers = McpServers(configs(tmp_path, {"hangs": hang}), connect_timeout=30)
    servers.start()
    await asyncio.sleep(0.3)  # spawned, waiting for initialize
    began = time.monotonic()
    await servers.aclose()
    assert time.monotonic() - began < 5
    assert await servers.wait_ready(0.01) is False  # never settled; nothing is left running


async def test_empty_configuration() -> None:
    servers = McpServers([])
    servers.start()
    assert await servers.wait_ready(0.1)
    assert servers.tools() == [] and servers.status() == []
    await servers.aclose()
