"""Discord adapter: gateway reconnects, restarts, command sync and the privileged intent."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.engine import Engine
from tests.conftest import EngineFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc, settle
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.mistral import FakeMistral, Reply
from tests.helpers import prompt_text

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures


async def test_gateway_disconnect_mid_answer_is_survived(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.first_token_delay = 0.2
    fake_mistral.token_interval = 0.02
    words = " ".join(f"t{i}" for i in range(60))
    fake_mistral.enqueue(Reply(words))
    msg = await dc.user_message(dc.general, dc.alice, "long one", mention=True)
    await dc.wait_until(lambda: dc.replies_to(msg["id"]), what="first visible text")
    await dc.gateway.drop(code=4000)
    # A message sent while the bot is away arrives when its session resumes.
    during = await dc.user_message(dc.general, dc.bob, "asked while offline", mention=True)
    assert await answer_to(bot, dc, msg) == words
    assert "asked while offline" in await answer_to(bot, dc, during)
    assert dc.gateway.resumes == 1
    assert dc.gateway.resume_paths == ["/resume-gateway"]  # READY's resume_gateway_url
    assert dc.gateway.identifies == 1


async def test_reconnect_request_resumes_and_keeps_answering(bot: Running, dc: FakeDiscord) -> None:
    await dc.gateway.request_reconnect()
    await dc.wait_until(lambda: dc.gateway.resumes == 1, what="a RESUME")
    msg = await dc.user_message(dc.general, dc.alice, "still there?", mention=True)
    assert "still there?" in await answer_to(bot, dc, msg)


async def test_restart_keeps_channel_context_and_skips_command_sync(
    make_engine: EngineFactory, dc: FakeDiscord, fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    db = tmp_path / "restart.db"
    first = await start_adapter(await make_engine(db), dc)
    await dc.user_message(dc.general, dc.bob, "the launch code word is PAPAYA")
    await settle()
    await first.stop()
    assert len(dc.command_syncs) == 1

    second = await start_adapter(await make_engine(db), dc)
    try:
        ask = await dc.user_message(dc.general, dc.alice, "what is the code word?", mention=True)
        await answer_to(second, dc, ask)
        assert "PAPAYA" in prompt_text(fake_mistral.requests[-1])
        assert len(dc.command_syncs) == 1  # the command set did not change: no re-sync
    finally:
        await second.stop()


async def test_commands_sync_to_configured_guilds_when_the_set_changes(
    make_engine: EngineFactory, dc: FakeDiscord, tmp_path: Path
) -> None:
    engine = await make_engine(tmp_path / "sync.db")
    first = await start_adapter(engine, dc)
    await first.stop()
    second = await start_adapter(engine, dc, guild_ids=(int(dc.guild_id),))
    await second.stop()
    scopes = [scope for scope, _ in dc.command_syncs]
    assert scopes == ["global", dc.guild_id]
    names = {c["name"] for c in dc.command_syncs[-1][1]}
    assert names == {
        "ask",
        "reset",
        "forget",
        "reasoning",
        "system",
        "summarize",
        "limits",
        "digest",
        "tools",
        "usage",
        "help",
        "listen",
        "Summarize from here",  # the message menu's commands
        "Ask teambot",
    }


async def test_refused_message_content_intent_is_explained_and_bot_still_answers(
    engine: Engine, fake_mistral: FakeMistral, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDiscord(message_content_allowed=False)
    await fake.start()
    caplog.set_level(logging.INFO)
    running = await start_adapter(engine, fake)
    try:
        assert fake.gateway.closed_4014 == 1
        assert not running.adapter.reads_content
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert "Message Content Intent" in warning and "Privileged Gateway Intents" in warning
        await fake.user_message(fake.general, fake.bob, "invisible chatter QQQ")
        await settle()
        mention = await fake.user_message(fake.general, fake.alice, "are you there?", mention=True)
        assert "are you there?" in await answer_to(running, fake, mention)
        assert "QQQ" not in prompt_text(fake_mistral.requests[-1])
        dm = await fake.user_message(fake.dm(fake.alice), fake.alice, "and in private?")
        assert "and in private?" in await answer_to(running, fake, dm)
        # A reply to the bot reaches it only when it pings; unpinged, Discord blanks it.
        answer = fake.replies_to(mention["id"])[0]
        pinged = await fake.user_message(
            fake.general, fake.alice, "pinged follow-up", reply_to=answer.id
        )
        assert "pinged follow-up" in await answer_to(running, fake, pinged)
        asked = len(fake_mistral.requests)
        quiet = await fake.user_message(
            fake.general, fake.alice, "quiet follow-up", reply_to=answer.id, ping=False
        )
        await settle()
        assert len(fake_mistral.requests) == asked
        assert not fake.replies_to(quiet["id"])
        assert "Discord hid its text" in caplog.text
    finally:
        await running.stop()
        await fake.close()


async def test_discord_unreachable_at_start_is_retried(
    engine: Engine, dc: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    dc.outage_logins = 1
    caplog.set_level(logging.WARNING)
    running = await start_adapter(engine, dc)
    try:
        assert "cannot reach Discord (HTTP 503); retrying" in caplog.text
        assert [r.status for r in dc.requests_to("GET", "/users/@me")] == [503, 200]
        msg = await dc.user_message(dc.general, dc.alice, "up again?", mention=True)
        assert "up again?" in await answer_to(running, dc, msg)
    finally:
        await running.stop()
