"""Real `teambot run` processes behind a load balancer, for tests and benches.

`BalancedSlack` is the fake Slack in HTTP mode with several app URLs; `Bots` starts
bot processes on one database, each listening on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.mistral import FakeMistral
from tests.fakes.slack.delivery import post_signed
from tests.fakes.slack.server import FakeSlack
from tests.test_cli import cli_env


class BalancedSlack(FakeSlack):
    """Slack behind a load balancer: event n goes to process n % 2 (the bot's own
    messages come back as events too), and (when `redeliver`) Slack's retry of it goes
    to the other process at the same time."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.mode = "http"
        self.urls: list[str] = []
        self.redeliver = False
        self.to: int | None = None  # send everything to this process instead
        self.statuses_seen: list[tuple[str, int]] = []  # (process URL, HTTP status)
        self._turn = itertools.count()

    async def _post_http(self, body: str, content_type: str, event_id: str) -> None:
        assert self._session is not None
        first = next(self._turn) % len(self.urls) if self.to is None else self.to
        targets = [(self.urls[first], None)]
        if self.redeliver:
            targets.append((self.urls[1 - first], (1, "http_timeout")))
        results = await asyncio.gather(
            *(
                post_signed(
                    self._session,
                    url,
                    body,
                    secret=self.signing_secret,
                    content_type=content_type,
                    retry=retry,
                )
                for url, retry in targets
            ),
            return_exceptions=True,
        )
        for (url, _), result in zip(targets, results, strict=True):
            self.statuses_seen.append((url, result[0] if isinstance(result, tuple) else -1))


async def teambot_run(
    env: dict[str, str], cwd: Path, *, output: Any = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`teambot run` as a real process; stderr (and stdout) go to `output`."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL if output is asyncio.subprocess.PIPE else output,
        stderr=output,
        env=env,
        cwd=cwd,
    )


def discord_env(model: FakeMistral, discord: Any, tmp: Path, **extra: str) -> dict[str, str]:
    """`cli_env` for a bot process talking to the fake Discord `discord`."""
    from tests.fakes.discord.server import BOT_TOKEN

    return cli_env(
        model,
        tmp,
        DISCORD_BOT_TOKEN=BOT_TOKEN,
        DISCORD_API_BASE_URL=discord.api_base_url,
        DISCORD_GATEWAY_URL=discord.gateway_url,
        **extra,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bots:
    """`teambot run` processes sharing one database, each on its own HTTP port."""

    def __init__(
        self,
        model: FakeMistral,
        slack: BalancedSlack,
        database: str,
        tmp: Path,
        **env: str,
    ) -> None:
        self.model, self.slack, self.database, self.tmp = model, slack, database, tmp
        self.env = env
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, count: int) -> None:
        for n in range(count):
            port = free_port()
            env = cli_env(
                self.model,
                self.tmp,
                DATABASE_URL=self.database,
                SLACK_BOT_TOKEN=self.slack.bot_token,
                SLACK_SIGNING_SECRET=self.slack.signing_secret,
                SLACK_API_BASE_URL=self.slack.api_url,
                TEAMBOT_SLACK_PORT=str(port),
                **self.env,
            )
            log = open(self.tmp / f"bot{n}.log", "wb")  # noqa: ASYNC230, SIM115
            process = await teambot_run(env, self.tmp, output=log)
            log.close()
            self.processes.append(process)
            url = f"http://127.0.0.1:{port}/slack/events"
            await self._listening(url, process, n)
            self.slack.urls.append(url)

    async def _listening(self, url: str, process: asyncio.subprocess.Process, n: int) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if process.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url):
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"bot {n} never listened: {self.log(n)[-2000:]}")

    def log(self, n: int) -> str:
        return (self.tmp / f"bot{n}.log").read_text(errors="replace")

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
            if process.returncode is None:
                process.kill()
                await process.wait()
