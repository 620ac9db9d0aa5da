"""`teambot run` end to end: a real subprocess, the fake Discord and the fake Mistral."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

from tests.fakes.discord.server import FakeDiscord
from tests.fakes.mistral import FakeMistral
from tests.fakes.processes import discord_env, teambot_run


async def test_sigterm_mid_reply_stores_and_posts_the_cut_answer_then_exits_0(tmp_path: Path):
    async with FakeMistral(token_interval=0.05, default_tokens=400) as model:
        discord = FakeDiscord()
        await discord.start()
        try:
            process = await teambot_run(discord_env(model, discord, tmp_path), tmp_path)
            await discord.wait_until(
                lambda: discord.gateway.identifies and discord.gateway.connected.is_set(),
                limit=30,
                what="the bot's gateway session",
            )
            question = await discord.user_message(
                discord.general, discord.alice, "tell me a long story", mention=True
            )
            await discord.wait_until(
                lambda: any(p.content for p in discord.replies_to(question["id"])),
                limit=20,
                what="the answer to start showing",
            )
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 15)
            took = time.monotonic() - stopped_at
            assert process.returncode == 0, err.decode()[-2000:]
            assert took < 10
            assert len(model.requests) == 1 and len(model.last_token_times) == 1
            # The stream was still running when the bot stopped: 400 tokens take 20 s.
            shown = "\n".join(p.content for p in discord.replies_to(question["id"]))
            assert shown.startswith("echo: [alice]: tell me a long story")
            assert "incomplete" in shown  # the user is told the answer was cut
            with sqlite3.connect(tmp_path / "cli.db") as db:
                rows = db.execute("SELECT role, text FROM messages ORDER BY id").fetchall()
            assert [r[0] for r in rows] == ["user", "assistant"]
            assert rows[0][1] == "tell me a long story"
            assert rows[1][1].startswith("echo: [alice]: tell me a long story")
            assert "Traceback" not in err.decode()
        finally:
            await discord.close()
