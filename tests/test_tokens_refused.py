"""A Discord token Discord refuses ends `teambot run` with one line naming the
variable and exit 2, as every refused credential does."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes.discord.server import FakeDiscord
from tests.fakes.mistral import FakeMistral
from tests.fakes.processes import discord_env, teambot_run

WRONG = "MTAwMDAwMDAwMDAwMDAwMDAw.wrong.token-that-discord-refuses"


async def test_a_refused_discord_token_is_one_line_and_exit_2(tmp_path: Path):
    async with FakeMistral() as model:
        discord = FakeDiscord()
        await discord.start()
        try:
            env = discord_env(model, discord, tmp_path) | {"DISCORD_BOT_TOKEN": WRONG}
            process = await teambot_run(env, tmp_path)
            _, err = await asyncio.wait_for(process.communicate(), 30)
        finally:
            await discord.close()
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert process.returncode == 2, err.decode()
    assert lines == [lines[0]] and "DISCORD_BOT_TOKEN" in lines[0], lines
    assert WRONG not in err.decode() and "Traceback" not in err.decode()
