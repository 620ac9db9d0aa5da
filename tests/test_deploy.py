"""The deployment files: no Docker engine runs here, so the image's entry point runs as a
plain process with the environment the Dockerfile sets, and the rest is checked as text."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.server import BOT_TOKEN
from tests.fakes.mistral import FakeMistral
from tests.test_cli import cli_env
from tests.test_metrics import free_port, healthz, running, until

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # where `pip install` put the `teambot` script


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
            pending = ""
    return found


def dockerfile() -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for name, args in instructions(ROOT / "Dockerfile"):
        by_name.setdefault(name, []).append(args)
    return by_name


def image_env() -> dict[str, str]:
    """Every ENV the Dockerfile sets (KEY=VALUE form)."""
    env: dict[str, str] = {}
    for args in dockerfile()["ENV"]:
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), args
    return parsed


def test_the_image_is_slim_non_root_and_keeps_its_data_on_a_volume():
    found = dockerfile()
    assert found["FROM"] == ["python:3.11-slim"]
    [user] = found["USER"]
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert any("pip install '.[postgres]'" in run for run in found["RUN"])
    assert any("useradd --system --uid 10001 --user-group" in run for run in found["RUN"])
    assert exec_form(found["CMD"][-1]) == ["teambot", "run"]
    assert "ENTRYPOINT" not in found
    env = image_env()
    assert env["DATABASE_URL"] == "sqlite:////data/teambot.db"
    assert exec_form(found["VOLUME"][0]) == ["/data"]
    assert env["TEAMBOT_METRICS_PORT"] in found["EXPOSE"][0].split()
    # What the image copies in is not ignored, and secrets and local state are.
    ignored = (ROOT / ".dockerignore").read_text().split()
    copied = [source for args in found["COPY"] for source in args.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "bot", "adapters"]
    assert not set(copied) & set(ignored)
    assert {".env", ".venv", "*.db", ".git"} <= set(ignored)


async def test_the_images_command_and_healthcheck_run_as_plain_processes(tmp_path: Path):
    """CMD exactly as the Dockerfile gives it, with its ENV (the /data volume is a tmp dir and
    the metrics port a free one), against the fake Discord and the fake Mistral."""
    found = dockerfile()
    command = exec_form(found["CMD"][-1])
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    env = image_env()
    env["DATABASE_URL"] = env["DATABASE_URL"].replace("/data/", f"{data}/")
    env["TEAMBOT_METRICS_PORT"] = str(port)
    async with FakeMistral() as model:
        discord = FakeDiscord()
        await discord.start()
        try:
            process_env = cli_env(
                model,
                tmp_path,
                **env,
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                DISCORD_BOT_TOKEN=BOT_TOKEN,
                DISCORD_API_BASE_URL=discord.api_base_url,
                DISCORD_GATEWAY_URL=discord.gateway_url,
            )
            async with running(process_env, data, command) as process:
                assert await until(lambda: healthz(port, 200), "/healthz 200", 60) == "ok\n"
                check = exec_form(found["HEALTHCHECK"][0].split(" CMD ", 1)[1])
                probe = await asyncio.create_subprocess_exec(*check, env=process_env, cwd=data)
                assert await asyncio.wait_for(probe.wait(), 30) == 0
                question = await discord.user_message(
                    discord.general, discord.alice, "hello from the image", mention=True
                )
                await until(lambda: discord.replies_to(question["id"]), "the answer")
                process.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(process.communicate(), 15)
                assert process.returncode == 0, err.decode()[-2000:]
        finally:
            await discord.close()
    assert [json.loads(line)["level"] for line in err.decode().splitlines()]  # JSON logs
    with sqlite3.connect(data / "teambot.db") as db:
        texts = [row[0] for row in db.execute("SELECT text FROM messages ORDER BY id")]
    assert texts[0] == "hello from the image" and texts[1].startswith("echo:")
    # The health check fails once nothing answers.
    probe = await asyncio.create_subprocess_exec(
        *check, env=process_env, cwd=data, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(probe.wait(), 30) != 0


def compose_services(text: str) -> dict[str, list[str]]:
    """The lines of each service under the top-level `services:` (2-space indentation)."""
    services: dict[str, list[str]] = {}
    current: str | None = None
    inside = False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.rstrip() == "services:"
            current = None
        elif inside and re.fullmatch(r"  [A-Za-z0-9_-]+:", line.rstrip()):
            current = line.strip().rstrip(":")
            services[current] = []
        elif inside and current:
            services[current].append(line.strip())
    return services


def test_compose_runs_the_bot_on_postgresql_with_a_healthcheck():
    services = compose_services((ROOT / "compose.yml").read_text())
    assert set(services) == {"bot", "postgres"}
    bot, postgres = services["bot"], services["postgres"]
    assert "build: ." in bot and "env_file: .env" in bot
    [url] = [line for line in bot if line.startswith("DATABASE_URL:")]
    assert "postgresql://" in url and "@postgres:5432/" in url
    assert "condition: service_healthy" in bot
    assert "image: postgres:16" in postgres and "healthcheck:" in postgres
    assert "- pgdata:/var/lib/postgresql/data" in postgres


def test_compose_is_valid_yaml():
    yaml = pytest.importorskip("yaml")  # not a dependency; checked where it is installed
    parsed = yaml.safe_load((ROOT / "compose.yml").read_text())
    assert set(parsed["services"]) == {"bot", "postgres"}
    assert "pgdata" in parsed["volumes"]


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "docs" / "teambot.service").read_text())
    return parser


def test_the_systemd_unit_runs_a_dedicated_user_restarting_on_failure_hardened():
    service = unit()["Service"]
    assert service["User"] == "teambot" and service["EnvironmentFile"]
    assert service["ExecStart"].endswith("/teambot run")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a config error is not retried
    for option, wanted in {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[option] == wanted, option
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    text = (ROOT / "docs" / "teambot.service").read_text()
    # Verify checks that ExecStart exists: point it at this machine's `teambot`.
    local = tmp_path / "teambot.service"
    local.write_text(text.replace("/opt/teambot/bin/teambot", str(BIN / "teambot")))
    done = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
