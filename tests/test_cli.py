"""The `teambot` command as a real subprocess, against the loopback fake Mistral."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.mistral import Error, FakeMistral, error_body

KEY = "sk-test-secret-value-9876"


def cli_env(fake: FakeMistral | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DISCORD_", "SLACK_", "TEAMBOT_", "MISTRAL_"))
    }
    env.update(
        MISTRAL_API_KEY=KEY,
        DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        PYTHONUNBUFFERED="1",
        # Discord answers in the channel, replying to the question, unless a test asks for
        # a thread per question (TEAMBOT_DISCORD_THREADS is on by default).
        TEAMBOT_DISCORD_THREADS="false",
    )
    if fake:
        env["MISTRAL_BASE_URL"] = fake.base_url
    env.update(extra)
    return env


async def teambot(
    *args: str, env: dict[str, str], cwd: Path, stdin: str = ""
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_chat_answers_each_piped_line_and_exits_at_eof(fake_mistral, tmp_path):
    env = cli_env(fake_mistral, tmp_path, TEAMBOT_LOG_LEVEL="DEBUG")
    code, out, err = await teambot("chat", env=env, cwd=tmp_path, stdin="first line\nsecond line\n")
    assert code == 0, err
    assert out.splitlines() == ["echo: first line", "echo: second line"]
    assert KEY not in err and KEY not in out


async def test_chat_streams_to_a_pipe_before_the_answer_ends(tmp_path):
    async with FakeMistral(token_interval=0.05, default_tokens=40) as fake:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "chat",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(fake, tmp_path),
            cwd=tmp_path,
        )
        assert process.stdin and process.stdout
        process.stdin.write(b"stream please\n")
        await process.stdin.drain()
        first = await asyncio.wait_for(process.stdout.read(5), 30)
        received_at = time.perf_counter()
        process.stdin.close()
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        assert (first + rest).decode().startswith("echo:")
        assert await process.wait() == 0
        # Text reached the pipe well before the fake sent its last token (2 s of tokens).
        assert received_at < fake.last_token_times[0] - 1.0


async def test_every_chat_continues_one_conversation_until_reset(fake_mistral, tmp_path):
    env = cli_env(fake_mistral, tmp_path)
    await teambot("chat", env=env, cwd=tmp_path, stdin="remember the word marzipan\n")
    await teambot("chat", env=env, cwd=tmp_path, stdin="what word?\n")
    assert "marzipan" in str(fake_mistral.requests[1]["messages"])
    code, out, _ = await teambot("chat", env=env, cwd=tmp_path, stdin="/reset\nand now?\n")
    assert code == 0
    assert out.startswith("Forgot this conversation (4 messages)")
    assert "marzipan" not in str(fake_mistral.requests[2]["messages"])


async def test_chat_commands_and_model_failure_message(fake_mistral, tmp_path):
    fake_mistral.enqueue(Error(401, error_body("Unauthorized", "invalid_api_key")))
    env = cli_env(fake_mistral, tmp_path)
    code, out, err = await teambot("chat", env=env, cwd=tmp_path, stdin="hi\n/help\n/usage\n")
    assert code == 0
    assert "API key was rejected" in out
    assert "think:" in out  # help text
    assert "This conversation: 1 model call" in out
    assert "Traceback" not in err and KEY not in err


@pytest.mark.parametrize(
    ("variable", "value", "accepts"),
    [
        ("TEAMBOT_REASONING", "medium", "none or high"),
        ("TEAMBOT_CONTEXT_TOKENS", "lots", "whole number"),
        ("TEAMBOT_CONTEXT_TOKENS", "255000", "whole number from 1000 to 251904"),
        ("TEAMBOT_MAX_OUTPUT_TOKENS", "0", "whole number"),
        ("TEAMBOT_LOG_LEVEL", "LOUD", "DEBUG"),
        ("MISTRAL_BASE_URL", "api.mistral.ai", "URL"),
        ("DATABASE_URL", "mysql://x", "sqlite:///"),
        ("MISTRAL_API_KEY", "", "API key"),
    ],
)
async def test_bad_configuration_is_one_line_and_exit_2(tmp_path, variable, value, accepts):
    env = cli_env(None, tmp_path, **{variable: value})
    code, _, err = await teambot("chat", env=env, cwd=tmp_path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and accepts in lines[0], err


async def test_dotenv_is_read_and_environment_wins(fake_mistral, tmp_path):
    (tmp_path / ".env").write_text("TEAMBOT_REASONING=high\nTEAMBOT_LOG_LEVEL=LOUD\n")
    env = cli_env(fake_mistral, tmp_path, TEAMBOT_LOG_LEVEL="INFO")
    code, _, err = await teambot("chat", env=env, cwd=tmp_path, stdin="x\n")
    assert code == 0, err
    assert fake_mistral.requests[0]["reasoning_effort"] == "high"


async def test_run_without_platform_says_what_to_set(fake_mistral, tmp_path):
    code, _, err = await teambot("run", env=cli_env(fake_mistral, tmp_path), cwd=tmp_path)
    assert code == 2
    assert "DISCORD_BOT_TOKEN" in err and "SLACK_BOT_TOKEN" in err and "Traceback" not in err


async def test_version(tmp_path):
    from bot import __version__

    code, out, _ = await teambot("--version", env=cli_env(None, tmp_path), cwd=tmp_path)
    assert code == 0 and out.strip() == f"teambot {__version__}"


async def test_check_reports_model_and_platforms(fake_mistral, tmp_path):
    code, out, _ = await teambot("check", env=cli_env(fake_mistral, tmp_path), cwd=tmp_path)
    assert code == 0, out
    assert "✓ model" in out and "Discord: not configured" in out
    fake_mistral.enqueue(Error(401, error_body("Unauthorized", "invalid_api_key")))
    code, out, err = await teambot("check", env=cli_env(fake_mistral, tmp_path), cwd=tmp_path)
    assert code == 1
    assert "✗ model" in out and "rejected" in out and KEY not in out + err


async def test_check_lists_each_mcp_server_with_its_tools_or_why_it_failed(fake_mistral, tmp_path):
    fake_server = Path(__file__).parent / "fakes" / "mcp_server.py"
    config = tmp_path / "mcp.json"
    servers = {
        "calc": {"command": sys.executable, "args": [str(fake_server), "stdio"]},
        "gone": {"command": str(tmp_path / "no-such-server"), "env": {"TOKEN": "sekrit-42"}},
    }
    config.write_text(json.dumps({"mcpServers": servers}))
    env = cli_env(fake_mistral, tmp_path, TEAMBOT_MCP_CONFIG=str(config))
    code, out, err = await teambot("check", env=env, cwd=tmp_path)
    assert code == 1, out + err
    calc = next(line for line in out.splitlines() if "MCP calc" in line)
    assert calc.startswith("✓") and "calc__add" in calc and "calc__echo" in calc
    gone = next(line for line in out.splitlines() if "MCP gone" in line)
    assert gone.startswith("✗") and "no-such-server" in gone
    assert "sekrit-42" not in out + err


async def test_usage_table_totals(fake_mistral, tmp_path):
    env = cli_env(fake_mistral, tmp_path)
    await teambot("chat", env=env, cwd=tmp_path, stdin="one\ntwo\n")
    code, out, _ = await teambot("usage", env=env, cwd=tmp_path)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["day", "platform", "user", "calls"]
    console_rows = [line for line in lines if " console " in line]
    assert len(console_rows) == 1 and console_rows[0].split()[3] == "2"
    assert lines[-1].startswith("total") and " 2 " in lines[-1]


async def test_kill_9_mid_reply_loses_no_question(tmp_path):
    async with FakeMistral(token_interval=0.02, default_tokens=200) as fake:
        env = cli_env(fake, tmp_path)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "chat",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        assert process.stdin and process.stdout
        process.stdin.write(b"the launch code is 4417\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.stdout.read(5), 30)  # mid-stream now
        process.kill()
        await process.wait()
        code, out, err = await teambot("chat", env=env, cwd=tmp_path, stdin="what was the code?\n")
        assert code == 0, err
        assert "the launch code is 4417" in str(fake.requests[-1]["messages"])
        # No answer was stored for the killed turn, so both questions reach the model together.
        assert out.startswith("echo: the launch code is 4417\n\nwhat was the code?")


async def test_chat_summarizes_the_conversation(fake_mistral, tmp_path):
    env = cli_env(fake_mistral, tmp_path)
    stdin = "the deploy is at noon\n/summarize 1d\n"
    code, out, err = await teambot("chat", env=env, cwd=tmp_path, stdin=stdin)
    assert code == 0, err
    summary_request = fake_mistral.requests[-1]
    assert summary_request["messages"][0]["content"].startswith("You summarise a team chat")
    assert "the deploy is at noon" in summary_request["messages"][1]["content"]
    assert "_Said here over the last day ·" in out and "2 messages · 1 model call" in out
