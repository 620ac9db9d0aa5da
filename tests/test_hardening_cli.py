"""First run, as a new user meets it: the CLI as real subprocesses (a pseudo-terminal
for the interactive chat), the fake Mistral behind it."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.mistral import Error, FakeMistral, error_body
from tests.test_cli import cli_env, teambot

pytestmark = pytest.mark.timeout(120)
SLACK = {"SLACK_BOT_TOKEN": "xoxb-unused", "SLACK_APP_TOKEN": "xapp-unused"}


def _unusable(tmp_path: Path, kind: str) -> str:
    if kind == "parent is a file":
        (tmp_path / "afile").write_text("x")
        return f"sqlite:///{tmp_path / 'afile' / 'sub' / 'bot.db'}"
    if kind == "cannot create the directory":
        return "sqlite:////proc/teambot-no-such-dir/bot.db"
    if kind == "a directory":
        return f"sqlite:///{tmp_path}"
    return "mysql://localhost/bot"  # unknown scheme


@pytest.mark.parametrize(
    "kind", ["parent is a file", "cannot create the directory", "a directory", "unknown scheme"]
)
@pytest.mark.parametrize("command", ["run", "chat", "check", "usage"])
async def test_unusable_database_url_is_one_line_and_exit_2(
    tmp_path: Path, kind: str, command: str
) -> None:
    env = cli_env(None, tmp_path, DATABASE_URL=_unusable(tmp_path, kind), **SLACK)
    code, _, err = await teambot(command, env=env, cwd=tmp_path)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "DATABASE_URL" in lines[0] and "Traceback" not in err


async def test_a_missing_database_directory_is_created(
    fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    path = tmp_path / "new" / "deeper" / "bot.db"
    env = cli_env(fake_mistral, tmp_path, DATABASE_URL=f"sqlite:///{path}")
    code, out, err = await teambot("chat", env=env, cwd=tmp_path, stdin="hello\n")
    assert code == 0, err
    assert out.strip() == "echo: hello" and path.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_check_with_an_unreachable_model_finishes_fast_naming_url_and_error(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    env = cli_env(None, tmp_path, MISTRAL_BASE_URL=url)
    started = time.monotonic()
    code, out, err = await teambot("check", env=env, cwd=tmp_path)
    assert time.monotonic() - started < 10
    assert code == 1 and "Traceback" not in err
    [line] = [line for line in out.splitlines() if "model" in line and "✗" in line]
    assert url in line and "ConnectError" in line


async def test_check_with_a_failing_model_makes_one_attempt(
    fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    for _ in range(5):
        fake_mistral.enqueue(Error(503, error_body("overloaded", "service_unavailable")))
    code, out, _ = await teambot("check", env=cli_env(fake_mistral, tmp_path), cwd=tmp_path)
    assert code == 1 and "503" in out and fake_mistral.base_url in out
    assert len(fake_mistral.requests) == 1


async def test_chat_survives_input_that_is_not_utf8(
    fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    env = cli_env(fake_mistral, tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "chat",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    out, err = await asyncio.wait_for(
        process.communicate(b"caf\xe9 \xff\xfe binary\nstill here\n"), 60
    )
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["echo: caf\ufffd \ufffd\ufffd binary", "echo: still here"]
    assert "Traceback" not in err.decode()
    with sqlite3.connect(tmp_path / "cli.db") as db:
        texts = [r[0] for r in db.execute("SELECT text FROM messages WHERE role = 'user'")]
    assert texts == ["caf\ufffd \ufffd\ufffd binary", "still here"]


async def test_costs_below_a_cent_show_two_significant_digits(
    fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    env = cli_env(fake_mistral, tmp_path)
    code, out, _ = await teambot("chat", env=env, cwd=tmp_path, stdin="hi\n/usage\n")
    [mine] = [line for line in out.splitlines() if line.startswith("• This conversation")]
    cost = mine.rsplit("$", 1)[1]
    assert code == 0 and float(cost) > 0, out
    assert cost.startswith("0.0000") and len(cost.rstrip("0")) >= 8, mine  # 0.0000xx
    code, table, _ = await teambot("usage", env=env, cwd=tmp_path)
    assert code == 0
    total = table.strip().splitlines()[-1].split()[-1]
    assert float(total) > 0 and total.startswith("0.0000") and len(total.rstrip("0")) >= 8


# The interactive chat, in a pseudo-terminal.


class Terminal:
    """A `teambot chat` on a pseudo-terminal: keys in, screen out."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the terminal's foreground process
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "bot.cli", "chat"], env)
        self.pid, self.fd, self.screen = pid, fd, ""

    def _wait(self, text: str, within: float) -> bool:
        deadline = time.monotonic() + within
        while text not in self.screen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.screen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:
                    break
        return text in self.screen

    async def wait(self, text: str, within: float = 30) -> None:
        assert await asyncio.to_thread(self._wait, text, within), (text, self.screen)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def prompts(self) -> int:
        return self.screen.count("you> ")

    async def exit_code(self, within: float = 20) -> int:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222 (never blocks)
            if pid:
                await asyncio.to_thread(self._wait, "\0", 0.2)  # what is left to read
                return os.waitstatus_to_exitcode(status)
            await asyncio.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"chat did not exit: {self.screen!r}")


async def test_ctrl_c_stops_the_answer_and_gives_the_prompt_back_then_exits_0(
    tmp_path: Path,
) -> None:
    async with FakeMistral(token_interval=0.05, default_tokens=400) as fake:
        term = Terminal(cli_env(fake, tmp_path), tmp_path)
        await term.wait("you> ")
        term.type(b"tell me a long story\r")
        await term.wait("echo: tell me")
        term.type(b"\x03")  # Ctrl-C, through the terminal
        await term.wait("Stopped: you pressed Ctrl-C")
        await asyncio.to_thread(term._wait, "never", 0.5)
        assert term.prompts() == 2, term.screen
        term.type(b"\x03")  # Ctrl-C at the empty prompt
        assert await term.exit_code() == 0, term.screen
    assert len(fake.requests) == 1
    assert " INFO " not in term.screen and "Traceback" not in term.screen
    with sqlite3.connect(tmp_path / "cli.db") as db:
        rows = db.execute("SELECT role, text FROM messages ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[1][1].startswith("echo: tell me")  # what was shown, stored as cut off
    assert len(rows[1][1]) < 200  # 400 tokens were coming: the answer was stopped


async def test_ctrl_d_at_the_prompt_exits_0(fake_mistral: FakeMistral, tmp_path: Path) -> None:
    term = Terminal(cli_env(fake_mistral, tmp_path), tmp_path)
    await term.wait("you> ")
    term.type(b"hello\r")
    await term.wait("echo: hello")
    term.type(b"\x04")  # Ctrl-D
    assert await term.exit_code() == 0, term.screen
    assert " INFO " not in term.screen
