"""Discord adapter: slash commands, deferred within 3 s and answered by follow-up."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.conftest import EngineFactory
from tests.fakes.discord import FakeDiscord, InteractionRecord, Posted
from tests.fakes.discord.fixtures import answer_to, bot, dc, settle
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.mistral import FakeMistral, Reply
from tests.fixtures import media
from tests.helpers import prompt_text

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures

PNG = media.png()  # a real image: images are decoded before they are sent


async def followups(bot: Running, dc: FakeDiscord, record: InteractionRecord) -> list[Posted]:
    """The interaction's visible answer once it is complete."""

    def done() -> list[Posted] | None:
        posted = [dc.posted[i] for i in record.followups if i in dc.posted]
        if posted and all(p.content for p in posted) and bot.adapter.pacer.idle():
            return posted
        return None

    return list(await dc.wait_until(done, what=f"follow-ups to /{record.name}"))


def deferred(record: InteractionRecord, *, ephemeral: bool) -> bool:
    [(at, body)] = record.callbacks
    return body["type"] == 5 and record.deferred_ephemeral == ephemeral and at - record.created < 3


async def test_ask_defers_then_streams_the_answer_as_a_follow_up(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.01
    fake_mistral.default_tokens = 30
    record = await dc.slash(
        "ask", {"prompt": "what is 2+2"}, user_id=dc.alice, channel_id=dc.general
    )
    [answer] = await followups(bot, dc, record)
    assert deferred(record, ephemeral=False)
    assert "what is 2+2" in answer.content and answer.content.endswith("more")
    assert not answer.ephemeral
    assert all(a == {"parse": []} for a in answer.allowed_mentions) and answer.pings == set()
    body = fake_mistral.requests[-1]
    assert body["reasoning_effort"] == "none"


async def test_ask_with_image_and_reasoning_reaches_the_model(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    options = {"prompt": "describe", "image": ("cat.png", "image/png", PNG), "reasoning": True}
    record = await dc.slash("ask", options, user_id=dc.alice, channel_id=dc.thread)
    await followups(bot, dc, record)
    body = fake_mistral.requests[-1]
    assert body["reasoning_effort"] == "high"
    parts = body["messages"][-1]["content"]
    assert any(p["type"] == "image_url" and "image/png" in p["image_url"] for p in parts)


async def test_usage_is_private(bot: Running, dc: FakeDiscord) -> None:
    record = await dc.slash("usage", user_id=dc.alice, channel_id=dc.general)
    [answer] = await followups(bot, dc, record)
    assert deferred(record, ephemeral=True)
    assert answer.ephemeral and answer.content.startswith("Usage of")


async def test_help_is_private(bot: Running, dc: FakeDiscord) -> None:
    record = await dc.slash("help", user_id=dc.alice, channel_id=dc.dm(dc.alice))
    [answer] = await followups(bot, dc, record)
    assert answer.ephemeral and "think:" in answer.content


async def test_reset_forgets_the_channel(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    await dc.user_message(dc.general, dc.bob, "old topic KIWI")
    await settle()
    record = await dc.slash("reset", user_id=dc.alice, channel_id=dc.general)
    [answer] = await followups(bot, dc, record)
    assert deferred(record, ephemeral=False) and "Forgot" in answer.content
    ask = await dc.user_message(dc.general, dc.alice, "what topic?", mention=True)
    await answer_to(bot, dc, ask)
    assert "KIWI" not in prompt_text(fake_mistral.requests[-1])


async def test_system_needs_an_admin(bot: Running, dc: FakeDiscord) -> None:
    record = await dc.slash(
        "system", {"text": "talk like a pirate"}, user_id=dc.bob, channel_id=dc.general
    )
    [answer] = await followups(bot, dc, record)
    assert deferred(record, ephemeral=True)
    assert answer.ephemeral and "Only admins" in answer.content


@pytest_asyncio.fixture
async def admin_bot(make_engine: EngineFactory, dc: FakeDiscord) -> AsyncIterator[Running]:
    running = await start_adapter(await make_engine(admin_ids=frozenset({dc.alice})), dc)
    yield running
    await running.stop()


async def test_admin_sets_system_instructions(
    admin_bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    record = await dc.slash(
        "system", {"text": "talk like a pirate"}, user_id=dc.alice, channel_id=dc.general
    )
    [answer] = await followups(admin_bot, dc, record)
    assert deferred(record, ephemeral=False) and "set" in answer.content
    ask = await dc.user_message(dc.general, dc.bob, "hi", mention=True)
    await answer_to(admin_bot, dc, ask)
    assert "talk like a pirate" in fake_mistral.requests[-1]["messages"][0]["content"]


async def test_reasoning_show_posts_thinking_as_a_file_only_when_asked(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("plain answer", thinking="hidden musings"))
    first = await dc.user_message(dc.general, dc.alice, "think: quick one", mention=True)
    assert await answer_to(bot, dc, first) == "plain answer"
    assert fake_mistral.requests[-1]["reasoning_effort"] == "high"  # the think: prefix
    assert dc.replies_to(first["id"])[0].files == {}
    assert "hidden musings" not in dc.replies_to(first["id"])[0].content

    record = await dc.slash("reasoning", {"mode": "show"}, user_id=dc.alice, channel_id=dc.general)
    await followups(bot, dc, record)
    fake_mistral.enqueue(Reply("considered answer", thinking="step one, step two"))
    second = await dc.user_message(dc.general, dc.alice, "hard one", mention=True)
    assert await answer_to(bot, dc, second) == "considered answer"
    assert fake_mistral.requests[-1]["reasoning_effort"] == "high"  # the channel default
    [reply] = dc.replies_to(second["id"])
    assert reply.files == {"thinking.md": b"step one, step two"}


async def test_an_interaction_too_old_to_answer_is_one_log_line(
    bot: Running, dc: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    record = await dc.slash("usage", user_id=dc.alice, channel_id=dc.general, age=3.5)
    await dc.wait_until(lambda: "Discord refused the response" in caplog.text, what="a log line")
    [line] = [r for r in caplog.records if "Discord refused" in r.getMessage()]
    assert "HTTP 404, code 10062" in line.getMessage() and line.exc_info is None
    assert record.callbacks == [] and record.followups == []


async def test_summarize_a_period_publicly_and_privately_with_jump_links(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    note = await dc.user_message(dc.general, dc.bob, "we ship on friday")
    await settle()
    fake_mistral.enqueue(Reply("**Decisions**\n- Ship on Friday [1]."))
    record = await dc.slash("summarize", {"span": "2h"}, user_id=dc.alice, channel_id=dc.general)
    answer = (await followups(bot, dc, record))[-1]
    assert deferred(record, ephemeral=False) and not answer.ephemeral
    link = f"https://discord.com/channels/{dc.guild_id}/{dc.general}/{note['id']}"
    assert f"[1]({link})" in answer.content
    assert "1 message" in answer.content and answer.pings == set()
    private = await dc.slash(
        "summarize", {"span": "30m", "private": True}, user_id=dc.alice, channel_id=dc.thread
    )
    [quiet] = await followups(bot, dc, private)
    assert deferred(private, ephemeral=True) and quiet.ephemeral
    assert quiet.content == "Nothing was said in this thread."
