"""A reply cut short by SIGKILL is marked cut off after the restart, never answered twice.

A real `teambot run` process streams a long answer through the fake Discord or Slack,
is killed with SIGKILL, and a new process starts on the same SQLite file: the reply's
message must end with the cut-off note, the store must hold the cut answer, and the
model must have been asked once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.journal import CUT_NOTE
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.mistral import FakeMistral
from tests.fakes.processes import discord_env, teambot_run
from tests.fakes.slack.server import FakeSlack
from tests.test_cli import cli_env
from tests.test_store import place  # noqa: F401 (the backends fixture)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def bots() -> Iterator[list[asyncio.subprocess.Process]]:
    """The `teambot run` processes a test starts; any still running at the end is killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()


async def until(check: Callable[[], object], what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def kill(process: asyncio.subprocess.Process) -> None:
    os.kill(process.pid, signal.SIGKILL)


def stored(db: Path) -> list[tuple[str, str, int | None]]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return conn.execute("SELECT role, text, reply_to FROM messages ORDER BY id").fetchall()


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 20)
    return err.decode(errors="replace")


async def test_discord_reply_cut_by_sigkill_is_marked_after_restart(tmp_path: Path, bots):
    async with FakeMistral(token_interval=0.05, default_tokens=400) as model:
        discord = FakeDiscord()
        await discord.start()
        try:
            env = discord_env(model, discord, tmp_path, TEAMBOT_DISCORD_THREADS="off")
            first = await teambot_run(env, tmp_path)
            bots.append(first)
            await discord.wait_until(
                lambda: discord.gateway.identifies and discord.gateway.connected.is_set(),
                limit=30,
                what="the bot's gateway session",
            )
            question = await discord.user_message(
                discord.general, discord.alice, "tell me a long story", mention=True
            )
            await until(
                lambda: any(len(p.content) > 40 for p in discord.replies_to(question["id"])),
                "the answer to show",
            )
            await asyncio.sleep(0.6)  # the journal records a new message within 0.25 s
            kill(first)
            await first.wait()
            shown = [p.content for p in discord.replies_to(question["id"])]
            assert not any(CUT_NOTE in text for text in shown)

            second = await teambot_run(env, tmp_path)
            bots.append(second)
            await until(
                lambda: any(
                    p.content.endswith(CUT_NOTE) for p in discord.replies_to(question["id"])
                ),
                "the reply to be marked cut off",
            )
            replies = discord.replies_to(question["id"])
            assert len(replies) == len(shown)  # edited in place, nothing new posted
            assert replies[-1].content.startswith(shown[-1][:40])
            assert len(model.requests) == 1  # never asked again
            err = await stop(second)
            assert "Traceback" not in err, err[-2000:]
            rows = stored(tmp_path / "cli.db")
            assert [role for role, _, _ in rows] == ["user", "assistant"]
            assert rows[1][1].endswith(CUT_NOTE) and rows[1][2] is not None
            assert rows[1][1].startswith("echo:")
        finally:
            await discord.close()


async def test_slack_reply_cut_by_sigkill_is_marked_after_restart(tmp_path: Path, bots):
    async with FakeMistral(token_interval=0.05, default_tokens=400) as model:
        slack = FakeSlack(limits=False)
        await slack.start()
        try:
            env = cli_env(
                model,
                tmp_path,
                SLACK_BOT_TOKEN=slack.bot_token,
                SLACK_APP_TOKEN=slack.app_token,
                SLACK_API_BASE_URL=slack.api_url,
            )
            first = await teambot_run(env, tmp_path)
            bots.append(first)
            await until(lambda: slack.hub.connections, "the socket connection")
            slack.add_channel("D1", "im")
            slack.user_message("U1", "D1", "tell me a long story")

            def showing() -> list[str]:
                return [
                    m.visible
                    for m in slack.messages.values()
                    if m.is_bot and m.channel == "D1" and "story" in m.visible
                ]

            await until(lambda: any(len(text) > 40 for text in showing()), "the answer to show")
            await asyncio.sleep(0.6)
            kill(first)
            await first.wait()
            before = showing()
            assert before and not any(CUT_NOTE in text for text in before)

            second = await teambot_run(env, tmp_path)
            bots.append(second)
            await until(
                lambda: any(text.rstrip().endswith(CUT_NOTE) for text in showing()),
                "the reply to be marked cut off",
            )
            assert len(showing()) == len(before)
            assert len(model.requests) == 1
            err = await stop(second)
            assert "Traceback" not in err, err[-2000:]
            rows = stored(tmp_path / "cli.db")
            assert [role for role, _, _ in rows] == ["user", "assistant"]
            assert rows[1][1].endswith(CUT_NOTE)
            with sqlite3.connect(tmp_path / "cli.db") as conn:  # for `teambot feedback` links
                meta = conn.execute("SELECT value FROM meta WHERE name = 'slack:workspace_url'")
                assert meta.fetchone() == ("https://fake.slack.test/",)
        finally:
            await slack.stop()


async def test_a_reply_in_progress_is_orphaned_once_its_process_is_gone(place):  # noqa: F811
    from bot.store import NewMessage
    from tests.test_store import open_backend

    backend, where = place
    first = await open_backend(backend, where)
    row = await first.add_question(
        "answer:q1", NewMessage("discord:G:C", "user", "U1", "Alice", "why?", 2, "m1")
    )
    assert row is not None  # storing the question records its reply as in progress
    await first.reply_progress(row.id, ["C/1", "C/2"], ["part one", "part two"])
    other = await first.add_question(
        "answer:q2", NewMessage("discord:G:C", "user", "U1", "Alice", "and?", 2, "m2")
    )
    assert other is not None
    await first.reply_ended(other.id)  # landed: nothing to recover
    second = await open_backend(backend, where)
    try:
        if backend == "postgres":  # several processes: the first is alive, so not orphaned
            assert await second.take_orphaned_replies("discord") == []
        await first.aclose()
        assert await second.take_orphaned_replies("slack") == []
        [orphan] = await second.take_orphaned_replies("discord")
        assert orphan.question == row.id and orphan.conversation == "discord:G:C"
        assert orphan.refs == ("C/1", "C/2") and orphan.shown == ("part one", "part two")
        assert orphan.answered is False
        assert await second.take_orphaned_replies("discord") == []  # taken once
    finally:
        await second.aclose()
