"""Discord: search and links through the real discord.py client, FakeDiscord and FakeMistral.

The private channel #staff (hidden from @everyone by a permission overwrite) holds a
canary; nothing of it may reach the model from anywhere else.
"""

from __future__ import annotations

import json

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc, settle
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import FakeMistral, Reply, ToolCall, ToolCalls

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures


def tool_results(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


async def test_search_cites_a_jump_link_that_neither_pings_nor_unfurls(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    note = await dc.user_message(dc.general, dc.bob, "we ship the release on friday")
    await settle()
    link = f"https://discord.com/channels/{dc.guild_id}/{dc.general}/{note['id']}"
    fake_mistral.enqueue(
        ToolCalls([ToolCall("search_messages", {"query": "release", "channel": "general"})]),
        Reply(f"Friday, [as bob said]({link}). @everyone <@{dc.bob}>"),
    )
    ask = await dc.user_message(dc.thread, dc.alice, "when is the release?", mention=True)
    text = await answer_to(bot, dc, ask)
    (result,) = tool_results(fake_mistral.requests[-1])
    assert "we ship the release on friday" in result and "#general" in result
    assert link in result
    [reply] = dc.replies_to(ask["id"])
    assert link in text and "🔧 search_messages" in text
    assert reply.suppress_embeds
    assert reply.pings == set()
    # While the tool ran, the reply showed what the bot was doing.
    assert any("Searching #general for “release”…" in v for _, v in reply.history)


async def test_a_private_channels_canary_never_reaches_another_channel(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    secret = await dc.user_message(dc.staff, dc.bob, "CANARY zebra-staff-salaries")
    await dc.user_message(dc.general, dc.bob, "CANARY public note")
    await settle()
    secret_link = f"https://discord.com/channels/{dc.guild_id}/{dc.staff}/{secret['id']}"
    fake_mistral.enqueue(
        ToolCalls(
            [
                ToolCall("search_messages", {"query": "CANARY"}),
                ToolCall("read_messages", {"link": secret_link}),
                ToolCall("read_messages", {"channel": "staff"}),
            ]
        ),
        Reply("done"),
    )
    ask = await dc.user_message(dc.general, dc.alice, "find the canary", mention=True)
    await answer_to(bot, dc, ask)
    found, linked, channel = tool_results(fake_mistral.requests[-1])
    assert "CANARY public note" in found
    assert "not available" in linked
    assert channel.startswith("Error: no channel 'staff'")
    assert "zebra" not in json.dumps(fake_mistral.requests)
    # Asked in #staff itself, the canary is found.
    fake_mistral.enqueue(ToolCalls([ToolCall("search_messages", {"query": "CANARY"})]), Reply("ok"))
    inside = await dc.user_message(dc.staff, dc.alice, "and here?", mention=True)
    await answer_to(bot, dc, inside)
    assert "zebra-staff-salaries" in tool_results(fake_mistral.requests[-1])[0]


async def test_a_dm_reads_the_public_channels_of_the_askers_guild(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    await dc.user_message(dc.general, dc.bob, "CANARY deploy window is tuesday")
    await dc.user_message(dc.staff, dc.bob, "CANARY zebra-staff-only")
    await settle()
    fake_mistral.enqueue(ToolCalls([ToolCall("search_messages", {"query": "CANARY"})]), Reply("ok"))
    ask = await dc.user_message(dc.dm(dc.alice), dc.alice, "when is the deploy window?")
    await answer_to(bot, dc, ask)
    (result,) = tool_results(fake_mistral.requests[-1])
    assert "deploy window is tuesday" in result and "#general" in result
    assert "zebra" not in json.dumps(fake_mistral.requests)


async def test_a_dm_from_someone_outside_the_server_reads_no_channel(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    await dc.user_message(dc.general, dc.bob, "CANARY zebra-members-only")
    await settle()
    stranger = dc.add_user("stranger")
    dc.outsiders.add(stranger)
    fake_mistral.enqueue(ToolCalls([ToolCall("search_messages", {"query": "CANARY"})]), Reply("ok"))
    ask = await dc.user_message(dc.dm(stranger), stranger, "what is new?")
    await answer_to(bot, dc, ask)
    assert tool_results(fake_mistral.requests[-1]) == ["No messages found for “CANARY”."]
    assert "zebra" not in json.dumps(fake_mistral.requests)


async def test_a_channel_made_private_is_no_longer_searchable_from_elsewhere(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    room = dc.add_channel("war-room")  # a new channel, announced to the connected bot
    await dc.gateway.dispatch("CHANNEL_CREATE", dict(dc.channels[room]))
    await dc.user_message(room, dc.bob, "CANARY zebra-war-plans")
    await settle()
    await dc.make_private(room)
    await settle()
    fake_mistral.enqueue(ToolCalls([ToolCall("search_messages", {"query": "CANARY"})]), Reply("ok"))
    ask = await dc.user_message(dc.general, dc.alice, "anything new?", mention=True)
    await answer_to(bot, dc, ask)
    assert tool_results(fake_mistral.requests[-1]) == ["No messages found for “CANARY”."]
