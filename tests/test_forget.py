"""What it keeps and forgets: `forget`, mirrored bulk deletes, and the admin audit trail."""

from __future__ import annotations

import re

import pytest

from bot.engine import Engine
from bot.types import DM, PUBLIC, Author, ConversationKey, Place
from tests.conftest import EngineFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc, settle
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import FakeMistral, Reply
from tests.helpers import ALICE, BOB, collect, message, prompt_text
from tests.test_discord_commands import followups

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures

CHANNEL = ConversationKey("slack", "T1", "C1")
ALICE_DM = ConversationKey("slack", "T1", "D1")
GENERAL = Place("C1", "general", PUBLIC)


async def _slack_history(engine: Engine) -> None:
    """Alice writes a canary in a channel and in her DM; Bob writes in the channel."""
    await engine.record(message("CANARY-CHANNEL alice's secret", conv=CHANNEL, place=GENERAL))
    await engine.record(message("bob's note stays", author=BOB, conv=CHANNEL, place=GENERAL))
    await collect(
        engine, message("CANARY-DM my DM secret", conv=ALICE_DM, place=Place("D1", "", DM))
    )


async def test_forget_without_confirm_explains_and_deletes_nothing(
    engine: Engine, fake_mistral: FakeMistral
) -> None:
    await _slack_history(engine)
    result = await engine.command(CHANNEL, ALICE, "forget", "")
    assert result.private and "forget confirm" in result.text
    assert await engine.store.audit_entries() == []
    await collect(engine, message("what was said?", author=BOB, conv=CHANNEL, place=GENERAL))
    assert "CANARY-CHANNEL" in prompt_text(fake_mistral.requests[-1])


async def test_forget_confirm_removes_the_callers_words_everywhere_on_that_platform(
    engine: Engine, fake_mistral: FakeMistral
) -> None:
    await _slack_history(engine)
    elsewhere = ConversationKey("discord", "G1", "C9")
    await engine.record(message("discord words of alice", conv=elsewhere))
    result = await engine.command(CHANNEL, ALICE, "forget", "confirm")
    assert result.private
    # Two messages of Alice's, plus the DM's answers when the store counts those too.
    assert re.fullmatch(
        r"Forgot [234] messages you wrote here on Slack, and your DM with me\. "
        r"Usage records stay, without your name\.",
        result.text,
    ), result.text
    await collect(engine, message("what was said?", author=BOB, conv=CHANNEL, place=GENERAL))
    channel_prompt = prompt_text(fake_mistral.requests[-1])
    assert "CANARY-CHANNEL" not in channel_prompt and "bob's note stays" in channel_prompt
    await collect(engine, message("what did I say?", conv=ALICE_DM, place=Place("D1", "", DM)))
    assert "CANARY-DM" not in prompt_text(fake_mistral.requests[-1])
    await collect(engine, message("and here?", author=BOB, conv=elsewhere))
    assert "discord words of alice" in prompt_text(fake_mistral.requests[-1])
    [entry] = await engine.store.audit_entries()
    assert (entry.platform, entry.actor, entry.action) == ("slack", ALICE.id, "forget")


async def test_forget_confirm_on_discord_removes_a_canary_from_later_prompts(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    await dc.user_message(dc.general, dc.alice, "CANARY-GUILD the launch code is 0000")
    await dc.user_message(dc.general, dc.bob, "bob says the demo is tuesday")
    dm = dc.dm(dc.alice)
    await answer_to(bot, dc, await dc.user_message(dm, dc.alice, "CANARY-DM remember 4242"))
    await settle()

    record = await dc.slash("forget", user_id=dc.alice, channel_id=dc.general)
    [answer] = await followups(bot, dc, record)
    assert answer.ephemeral and "forget confirm" in answer.content
    record = await dc.slash("forget", {"confirm": True}, user_id=dc.alice, channel_id=dc.general)
    [answer] = await followups(bot, dc, record)
    assert answer.ephemeral and re.match(r"Forgot [23] messages", answer.content)
    assert "Discord" in answer.content

    ask = await dc.user_message(dc.general, dc.bob, "what was said here?", mention=True)
    await answer_to(bot, dc, ask)
    prompt = prompt_text(fake_mistral.requests[-1])
    assert "CANARY-GUILD" not in prompt and "demo is tuesday" in prompt
    again = await dc.user_message(dm, dc.alice, "what did I ask you to remember?")
    await answer_to(bot, dc, again)
    assert "CANARY-DM" not in prompt_text(fake_mistral.requests[-1])


async def test_discord_bulk_delete_never_reaches_a_later_prompt(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    kept = await dc.user_message(dc.general, dc.bob, "the plan is to ship")
    gone = [await dc.user_message(dc.general, dc.bob, f"spam BULK{n}") for n in range(3)]
    await settle()
    # Read the channel once so its window is cached before the bulk delete.
    fake_mistral.enqueue(Reply("hello"))
    await answer_to(bot, dc, await dc.user_message(dc.general, dc.alice, "hi", mention=True))
    await dc.user_bulk_delete([m["id"] for m in gone])
    await settle()
    ask = await dc.user_message(dc.general, dc.alice, "what is the plan?", mention=True)
    await answer_to(bot, dc, ask)
    prompt = prompt_text(fake_mistral.requests[-1])
    assert "BULK" not in prompt and kept["content"] in prompt


async def test_admin_changes_are_audited(make_engine: EngineFactory) -> None:
    engine = await make_engine(admin_ids=frozenset({ALICE.id}))
    key = ConversationKey("discord", "G1", "C1")
    await engine.command(key, ALICE, "system", "talk like a pirate")
    await engine.command(key, ALICE, "system", "clear")
    await engine.command(key, ALICE, "tools", "off")
    await engine.command(key, ALICE, "digest", "on 17:30")
    await engine.command(key, ALICE, "digest", "off")
    await engine.command(key, ALICE, "system", "")  # looking changes nothing
    await engine.command(key, BOB, "system", "refused")  # not an admin: nothing changes
    await engine.command(key, Author("U9", "Nine"), "forget", "confirm")
    entries = await engine.store.audit_entries()
    assert [(e.actor, e.action) for e in entries] == [
        ("U1", "system"),
        ("U1", "system"),
        ("U1", "tools"),
        ("U1", "digest"),
        ("U1", "digest"),
        ("U9", "forget"),
    ]
    assert all(e.platform == "discord" for e in entries)
    assert "18 chars" in entries[0].detail and "pirate" in entries[0].detail
    assert "cleared" in entries[1].detail
    assert entries[2].detail.startswith("off") and entries[3].detail.startswith("on 17:30")


async def test_retention_deletes_old_text_from_later_prompts_even_when_cached(
    make_engine, fake_mistral
):
    import time as clock

    from tests.helpers import collect, key, message

    engine = await make_engine(retention_days=30)
    old = message("zebra-ancient-secret", conv=key("C5"), is_group=True)
    await engine.record(old)
    fake_mistral.enqueue(Reply("noted"))  # an answer that does not repeat the old text
    await collect(engine, message("first question", conv=key("C5"), is_group=True))
    assert "zebra-ancient-secret" in str(fake_mistral.requests[-1]["messages"])  # cached now
    await engine.store._run(
        engine.store._rows,
        "UPDATE messages SET created_at = ? WHERE text = ? RETURNING id",
        [clock.time() - 40 * 86400, "zebra-ancient-secret"],
    )
    assert await engine.retention.sweep(clock.time()) == 1
    await collect(engine, message("second question", conv=key("C5"), is_group=True))
    assert "zebra-ancient-secret" not in str(fake_mistral.requests[-1]["messages"])
