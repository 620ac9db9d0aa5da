"""Discord adapter, message path: the real discord.py client against FakeDiscord + FakeMistral."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc, settle
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import FakeMistral, Reply
from tests.helpers import prompt_text

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures


async def test_mention_in_channel_is_answered_as_a_reply(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    msg = await dc.user_message(dc.general, dc.alice, "hello there", mention=True)
    text = await answer_to(bot, dc, msg)
    assert text == "echo: [alice]: hello there"
    [reply] = dc.replies_to(msg["id"])
    assert reply.reference_id == msg["id"]
    # The bot's own mention is stripped before the model sees the words.
    assert f"<@{dc.bot_id}>" not in prompt_text(fake_mistral.requests[-1])


async def test_reply_to_the_bot_without_mention_is_answered(bot: Running, dc: FakeDiscord) -> None:
    first = await dc.user_message(dc.general, dc.alice, "one", mention=True)
    await answer_to(bot, dc, first)
    bot_reply = dc.replies_to(first["id"])[0]
    follow = await dc.user_message(dc.general, dc.bob, "and two?", reply_to=bot_reply.id)
    assert await answer_to(bot, dc, follow) == "echo: [bob]: and two?"


async def test_unaddressed_channel_messages_are_context_not_answered(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    chatter = await dc.user_message(dc.general, dc.bob, "we decided to ship on friday")
    await settle()
    assert dc.replies_to(chatter["id"]) == []
    assert fake_mistral.requests == []
    ask = await dc.user_message(dc.general, dc.alice, "what did we decide above?", mention=True)
    await answer_to(bot, dc, ask)
    prompt = prompt_text(fake_mistral.requests[-1])
    assert "we decided to ship on friday" in prompt
    assert "bob" in prompt  # speakers are named in group conversations


async def test_every_dm_is_answered(bot: Running, dc: FakeDiscord) -> None:
    dm = dc.dm(dc.alice)
    msg = await dc.user_message(dm, dc.alice, "hi in private")
    assert await answer_to(bot, dc, msg) == "echo: hi in private"


async def test_thread_is_its_own_conversation(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    await dc.user_message(dc.general, dc.bob, "channel secret alpha")
    await dc.user_message(dc.thread, dc.bob, "thread note beta")
    await settle()
    ask = await dc.user_message(dc.thread, dc.alice, "summarise", mention=True)
    await answer_to(bot, dc, ask)
    prompt = prompt_text(fake_mistral.requests[-1])
    assert "thread note beta" in prompt
    assert "channel secret alpha" not in prompt


async def test_edits_and_deletes_of_recorded_messages_are_reflected(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    edited = await dc.user_message(dc.general, dc.bob, "budget is 10k")
    gone = await dc.user_message(dc.general, dc.bob, "password hunter2")
    await settle()
    await dc.user_edit(edited["id"], "budget is 12k")
    await dc.user_delete(gone["id"])
    await settle()
    ask = await dc.user_message(dc.general, dc.alice, "what is the budget?", mention=True)
    await answer_to(bot, dc, ask)
    prompt = prompt_text(fake_mistral.requests[-1])
    assert "budget is 12k" in prompt
    assert "budget is 10k" not in prompt
    assert "hunter2" not in prompt


async def test_two_channels_in_parallel_never_see_each_other(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    random = dc.by_name["random"]
    await dc.user_message(dc.general, dc.bob, "general-only fact GGG")
    await dc.user_message(random, dc.bob, "random-only fact RRR")
    await settle()
    fake_mistral.first_token_delay = 0.2
    fake_mistral.token_interval = 0.01
    one, two = await asyncio.gather(
        dc.user_message(dc.general, dc.alice, "ask G", mention=True),
        dc.user_message(random, dc.alice, "ask R", mention=True),
    )
    text_one, text_two = await asyncio.gather(answer_to(bot, dc, one), answer_to(bot, dc, two))
    assert "ask G" in text_one and "RRR" not in text_one
    assert "ask R" in text_two and "GGG" not in text_two
    prompts = [prompt_text(r) for r in fake_mistral.requests]
    [g] = [p for p in prompts if "ask G" in p]
    [r] = [p for p in prompts if "ask R" in p]
    assert "GGG" in g and "RRR" not in g
    assert "RRR" in r and "GGG" not in r
    assert all(p.channel_id == dc.general for p in dc.replies_to(one["id"]))
    assert all(p.channel_id == random for p in dc.replies_to(two["id"]))


async def test_replies_never_ping_whatever_the_model_writes(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    role_id = "123456789012345678"
    nasty = f"@everyone @here see <@{dc.bob}>, <@&{role_id}> and <@!{dc.alice}>"
    fake_mistral.enqueue(Reply(nasty))
    msg = await dc.user_message(dc.general, dc.alice, "ping all", mention=True)
    assert await answer_to(bot, dc, msg) == nasty
    [reply] = dc.replies_to(msg["id"])
    assert reply.pings == set()  # not even the author we replied to
    assert reply.allowed_mentions and all(a == {"parse": []} for a in reply.allowed_mentions)


async def test_long_answer_is_split_with_fences_reopened(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    code = "\n".join(f"    total += compute_value({i})  # step {i}" for i in range(120))
    long = f"Here is the script:\n\n```python\ndef run():\n{code}\n```\n\nDone. " + "word " * 300
    fake_mistral.enqueue(Reply(long))
    msg = await dc.user_message(dc.general, dc.alice, "code pls", mention=True)
    await answer_to(bot, dc, msg)
    parts = [p.content for p in dc.replies_to(msg["id"])]
    assert len(parts) >= 3
    assert all(len(p) <= 2000 for p in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part[:80]  # every part renders on its own
    assert parts[1].startswith("```python")
    joined = "".join(parts)
    for i in (0, 60, 119):
        assert f"compute_value({i})" in joined


async def test_other_bots_and_the_bots_own_messages_are_not_answered(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    other = dc.add_user("otherbot")
    dc.users[other]["bot"] = True
    msg = await dc.user_message(dc.general, other, "hey teambot", mention=True)
    await settle()
    assert dc.replies_to(msg["id"]) == []
    assert fake_mistral.requests == []
    ask = await dc.user_message(dc.general, dc.alice, "and me?", mention=True)
    await answer_to(bot, dc, ask)
    assert len(fake_mistral.requests) == 1  # the bot's own reply did not trigger another


async def test_slash_ask_and_mentions_share_the_dm_conversation(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    dm = dc.dm(dc.alice)
    first = await dc.user_message(dm, dc.alice, "my name is Zed")
    await answer_to(bot, dc, first)
    await dc.slash("ask", {"prompt": "what is my name?"}, user_id=dc.alice, channel_id=dm)
    await dc.wait_until(lambda: len(fake_mistral.requests) == 2 and bot.adapter.pacer.idle())
    assert "my name is Zed" in prompt_text(fake_mistral.requests[-1])


async def test_mentioning_the_bots_role_counts_as_mentioning_the_bot(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    msg = await dc.user_message(dc.general, dc.alice, f"<@&{dc.bot_role_id}> role ping")
    assert await answer_to(bot, dc, msg) == "echo: [alice]: role ping"
    other = await dc.user_message(dc.general, dc.alice, "<@&424242424242424242> not us")
    await settle()
    assert dc.replies_to(other["id"]) == []
