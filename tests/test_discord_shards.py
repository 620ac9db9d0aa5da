"""Discord sharding: one process running every shard Discord recommends, or the shards
DISCORD_SHARD_COUNT / DISCORD_SHARD_IDS give it, several processes on one PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from adapters.discord.settings import describe
from adapters.discord.settings import load as load_discord
from bot.config import ConfigError
from bot.engine import Engine
from bot.types import ConversationKey
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.gateway import shard_of
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.discord.server import BOT_TOKEN
from tests.fakes.mistral import FakeMistral
from tests.fakes.processes import teambot_run
from tests.test_cli import cli_env, teambot
from tests.test_store import POSTGRES_URL

pytestmark = pytest.mark.timeout(60)


def sharded(*, buckets: int = 2) -> FakeDiscord:
    """A fake recommending 2 shards that refuses IDENTIFYs faster than Discord allows;
    with 2 buckets both shards may identify at once."""
    fake = FakeDiscord(shards=2)
    fake.max_concurrency = buckets
    fake.identify_window_s = 5.0
    return fake


def two_shard_guilds(fake: FakeDiscord) -> tuple[str, str]:
    """A channel in a guild of shard 0 and one in a guild of shard 1 (of 2)."""
    channels = []
    for shard in (0, 1):
        guild = fake.add_guild(f"team-{shard}", shard=(shard, 2))
        assert shard_of(guild, 2) == shard
        channels.append(fake.add_channel(f"general-{shard}", guild=guild))
    return channels[0], channels[1]


def events_seen(fake: FakeDiscord, shard: int, name: str) -> list[dict[str, Any]]:
    session = fake.gateway.sessions[shard]
    return [frame["d"] for frame in session.sent if frame["t"] == name]


async def answered(fake: FakeDiscord, message: dict[str, Any], text: str) -> bool:
    """Wait until the bot's answer to `message` shows `text` (the fake model echoes it)."""

    def shows() -> bool:
        return text in "\n".join(p.content for p in fake.replies_to(message["id"]))

    return bool(await fake.wait_until(shows, limit=20, what=f"an answer showing {text!r}"))


# -- settings ------------------------------------------------------------------------------


def test_shard_variables_are_read() -> None:
    env = {"DISCORD_BOT_TOKEN": "t", "DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "3, 1"}
    settings = load_discord(env)
    assert settings is not None
    assert (settings.shard_count, settings.shard_ids) == (4, (3, 1))
    alone = load_discord({"DISCORD_BOT_TOKEN": "t", "DISCORD_SHARD_COUNT": "2"})
    assert alone is not None and (alone.shard_count, alone.shard_ids) == (2, ())
    unset = load_discord({"DISCORD_BOT_TOKEN": "t"})
    assert unset is not None and (unset.shard_count, unset.shard_ids) == (None, ())
    assert describe(settings) == "configured (shards 3,1 of 4)"
    assert describe(alone) == "configured (shards all of 2)"
    assert describe(unset) == "configured"


@pytest.mark.parametrize(
    ("count", "ids", "variable"),
    [
        ("0", "", "DISCORD_SHARD_COUNT"),
        ("two", "", "DISCORD_SHARD_COUNT"),
        ("-1", "", "DISCORD_SHARD_COUNT"),
        ("2", "2", "DISCORD_SHARD_IDS"),
        ("2", "0,0", "DISCORD_SHARD_IDS"),
        ("2", "one", "DISCORD_SHARD_IDS"),
        ("", "0", "DISCORD_SHARD_IDS"),
    ],
)
def test_bad_shard_values_name_the_variable(count: str, ids: str, variable: str) -> None:
    env = {"DISCORD_BOT_TOKEN": "t", "DISCORD_SHARD_COUNT": count, "DISCORD_SHARD_IDS": ids}
    with pytest.raises(ConfigError) as caught:
        load_discord(env)
    assert caught.value.variable == variable


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "2"}, "DISCORD_SHARD_IDS"),
        ({"DISCORD_SHARD_IDS": "0"}, "DISCORD_SHARD_IDS"),
        ({"DISCORD_SHARD_COUNT": "many"}, "DISCORD_SHARD_COUNT"),
    ],
)
async def test_run_refuses_bad_shard_values_with_one_line(
    tmp_path: Path, extra: dict[str, str], variable: str
) -> None:
    env = cli_env(None, tmp_path, DISCORD_BOT_TOKEN=BOT_TOKEN, **extra)
    code, out, err = await teambot("run", env=env, cwd=tmp_path)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and variable in err, err
    assert BOT_TOKEN not in err + out


# -- one process, every shard --------------------------------------------------------------


async def test_without_shard_variables_every_recommended_shard_runs_in_one_process(
    engine: Engine,
) -> None:
    fake = sharded()
    first, second = two_shard_guilds(fake)
    await fake.start()
    running = await start_adapter(engine, fake)
    try:
        assert [i.shard for i in fake.gateway.identified] == [[0, 2], [1, 2]]
        assert fake.gateway.identify_refused == 0
        assert len(fake.requests_to("GET", "/gateway/bot")) == 1
        for shard in (0, 1):
            (ready,) = events_seen(fake, shard, "READY")
            assert ready["shard"] == [shard, 2]
            assert all(shard_of(g["id"], 2) == shard for g in ready["guilds"])
        one = await fake.user_message(first, fake.alice, "hello from shard zero", mention=True)
        two = await fake.user_message(second, fake.bob, "hello from shard one", mention=True)
        dm = await fake.user_message(fake.dm(fake.alice), fake.alice, "hello in private")
        assert await answered(fake, one, "hello from shard zero")
        assert await answered(fake, two, "hello from shard one")
        assert await answered(fake, dm, "hello in private")
        # Each question came through its own shard's connection only (DMs on shard 0).
        created = {s: {m["id"] for m in events_seen(fake, s, "MESSAGE_CREATE")} for s in (0, 1)}
        assert {one["id"], dm["id"]} <= created[0] and two["id"] not in created[0]
        assert two["id"] in created[1] and not {one["id"], dm["id"]} & created[1]
        await wait_connected(running)
        assert running.adapter.client is not None
        assert sorted(running.adapter.client.shards) == [0, 1]
    finally:
        await running.stop()
        await fake.close()


async def test_shards_sharing_an_identify_bucket_wait_their_turn(engine: Engine) -> None:
    fake = sharded(buckets=1)
    await fake.start()
    running = await start_adapter(engine, fake)
    try:
        assert [i.shard for i in fake.gateway.identified] == [[0, 2], [1, 2]]
        assert fake.gateway.identify_refused == 0
    finally:
        await running.stop()
        await fake.close()


async def wait_connected(running: Running) -> None:
    await FakeDiscord.wait_until(lambda: running.adapter.connected, what="every shard ready")


async def test_one_shard_reconnects_on_its_own_and_keeps_answering(engine: Engine) -> None:
    fake = sharded()
    first, second = two_shard_guilds(fake)
    await fake.start()
    running = await start_adapter(engine, fake)
    try:
        await wait_connected(running)
        await fake.gateway.drop(4000, shard=1)
        # A message of shard 1's guild sent while it is away arrives with its RESUME.
        away = await fake.user_message(second, fake.alice, "asked while away", mention=True)
        assert await answered(fake, away, "asked while away")
        assert fake.gateway.resumes == 1 and fake.gateway.identifies == 2
        await FakeDiscord.wait_until(lambda: running.adapter.connected, what="shard 1 back")
        still = await fake.user_message(first, fake.bob, "shard zero unaffected", mention=True)
        assert await answered(fake, still, "shard zero unaffected")
    finally:
        await running.stop()
        await fake.close()


async def test_configured_shards_are_the_only_ones_run(engine: Engine) -> None:
    fake = sharded()  # the recommendation is not asked for
    _, second = two_shard_guilds(fake)
    await fake.start()
    running = await start_adapter(engine, fake, shard_count=2, shard_ids=(1,))
    try:
        assert [i.shard for i in fake.gateway.identified] == [[1, 2]]
        assert fake.requests_to("GET", "/gateway/bot") == []
        mine = await fake.user_message(second, fake.alice, "shard one here", mention=True)
        assert await answered(fake, mine, "shard one here")
        await wait_connected(running)
        client = running.adapter.client
        assert client is not None and sorted(client.shards) == [1]
        assert {g.id for g in client.guilds} == {
            int(gid) for gid in fake.guilds if shard_of(gid, 2) == 1
        }
    finally:
        await running.stop()
        await fake.close()


async def test_a_digest_for_another_process_s_shard_is_posted_over_rest(engine: Engine) -> None:
    fake = sharded()
    elsewhere, _ = two_shard_guilds(fake)
    await fake.start()
    running = await start_adapter(engine, fake, shard_count=2, shard_ids=(1,))
    try:
        client = running.adapter.client
        assert client is not None and client.get_channel(int(elsewhere)) is None
        guild = fake.channels[elsewhere]["guild_id"]
        post = engine.digests.posters["discord"]
        await post(ConversationKey("discord", guild, elsewhere), "**Daily digest** all quiet")
        assert [p.content for p in fake.bot_messages(elsewhere)] == ["**Daily digest** all quiet"]
    finally:
        await running.stop()
        await fake.close()


async def test_recommended_shards_still_connect_through_the_configured_gateway(
    engine: Engine,
) -> None:
    fake = sharded()
    await fake.start()
    # What GET /gateway/bot names is not where an operator's DISCORD_GATEWAY_URL points.
    fake.bot_gateway_url = "ws://127.0.0.1:9/elsewhere"
    running = await start_adapter(engine, fake)
    try:
        assert [i.shard for i in fake.gateway.identified] == [[0, 2], [1, 2]]
    finally:
        await running.stop()
        await fake.close()


# -- two processes, one database -----------------------------------------------------------


@pytest_asyncio.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (skipped where none runs), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"teambot_shards_{uuid.uuid4().hex[:10]}"
    try:
        async with await psycopg.AsyncConnection.connect(
            POSTGRES_URL, autocommit=True, connect_timeout=5
        ) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    yield urlsplit(POSTGRES_URL)._replace(path=f"/{name}").geturl()
    with contextlib.suppress(Exception):
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Bot:
    """One `teambot run` process, its stderr collected as it is written."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode())

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def stop(self) -> None:
        """SIGTERM; the process must exit 0."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), 20)
        await self._reader
        assert self.process.returncode == 0, self.log[-2000:]

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


async def start_bot(
    model: FakeMistral, fake: FakeDiscord, port: int, shard: int, database: str, cwd: Path
) -> Bot:
    env = cli_env(
        model,
        cwd,
        DATABASE_URL=database,
        DISCORD_BOT_TOKEN=BOT_TOKEN,
        DISCORD_API_BASE_URL=fake.api_base_url_at(port),
        DISCORD_GATEWAY_URL=fake.gateway_url_at(port),
        DISCORD_SHARD_COUNT="2",
        DISCORD_SHARD_IDS=str(shard),
    )
    return Bot(await teambot_run(env, cwd))


async def test_two_processes_each_answer_their_own_shard_once(
    pg_database: str, tmp_path: Path
) -> None:
    async with FakeMistral() as model:
        fake = FakeDiscord(shards=1)  # the configured count wins over the recommendation
        first, second = two_shard_guilds(fake)
        await fake.start()
        ports = [await fake.listen(), await fake.listen()]
        bots: list[Bot] = []
        try:
            # One after the other, so the first has created the schema.
            for shard in (0, 1):
                bots.append(
                    await start_bot(model, fake, ports[shard], shard, pg_database, tmp_path)
                )
                await fake.wait_until(
                    lambda s=shard: s in fake.gateway.sessions and fake.gateway.sessions[s].live,
                    limit=30,
                    what=f"process {shard}'s gateway session",
                )
            assert fake.gateway.connected.is_set()
            assert [(i.shard, i.port) for i in fake.gateway.identified] == [
                ([0, 2], ports[0]),
                ([1, 2], ports[1]),
            ]
            questions = [
                (0, first, fake.alice, "zero in a guild"),
                (0, fake.dm(fake.bob), fake.bob, "zero in a DM"),
                (1, second, fake.alice, "one in a guild"),
                (1, second, fake.bob, "one again"),
            ]
            asked = []
            for shard, channel, author, text in questions:
                in_dm = "guild_id" not in fake.channels[channel]
                message = await fake.user_message(channel, author, text, mention=not in_dm)
                asked.append((shard, message, text))
            for _, message, text in asked:
                assert await answered(fake, message, text)
            for shard, bot in enumerate(bots):
                await fake.wait_until(
                    lambda b=bot, s=shard: f"(shards {s} of 2)" in b.log,
                    limit=20,
                    what=f"process {shard}'s on_ready",
                )
            # Answered exactly once (one model call each), by the process owning the shard.
            assert len(model.requests) == len(asked)
            for shard, message, _ in asked:
                (reply,) = [p for p in fake.bot_messages() if p.reference_id == message["id"]]
                posts = [
                    r
                    for r in fake.requests_to("POST", f"/channels/{reply.channel_id}/messages")
                    if r.status == 200
                ]
                assert posts and {r.port for r in posts} == {ports[shard]}
            for bot in bots:
                await bot.stop()
        finally:
            for bot in bots:
                await bot.kill()
            await fake.close()
