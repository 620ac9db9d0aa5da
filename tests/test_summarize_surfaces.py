"""`summarize` from a message: Slack's "Summarize thread" shortcut and Discord's
"Summarize from here" message menu, through the real slack-bolt and discord.py clients,
the fakes, the engine on SQLite and the fake Mistral."""

from __future__ import annotations

import re

import pytest

from adapters.discord.commands import SUMMARIZE_FROM_HERE
from adapters.slack.manifest import SUMMARIZE_THREAD
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import bot, dc, settle
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import FakeMistral, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack.fixtures import (  # noqa: F401
    fake_slack_fixture,
    slack_fixture,
    slack_http_fixture,
)
from tests.fakes.slack.harness import Harness
from tests.test_discord_commands import deferred, followups

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures

SUMMARY = "**Topics**\n- The slow API [1], fixed by a restart [3]."


def slack_link(channel: str, ts: str, thread: str = "") -> str:
    link = f"https://fake.slack.test/archives/{channel}/p{ts.replace('.', '')}"
    return f"{link}?thread_ts={thread}&cid={channel}" if thread else link


def incident(fake: FakeSlack, channel: str) -> tuple[str, str]:
    """Channel chatter around a three-message thread; returns (root ts, last reply ts)."""
    fake.user_message("U2", channel, "lunch at noon?")
    root = fake.user_message("U1", channel, "incident: the API is slow")
    fake.user_message("U2", channel, "looking into it", thread_ts=root)
    reply = fake.user_message("U3", channel, "fixed by a restart", thread_ts=root)
    fake.user_message("U2", channel, "anyone for coffee?")
    return root, reply


@pytest.mark.parametrize(("channel", "used_on"), [("C1", "reply"), ("G1", "root")])
async def test_slack_shortcut_summarises_the_whole_thread_into_it(
    slack: Harness, fake_mistral: FakeMistral, channel: str, used_on: str
) -> None:
    fake = slack.fake
    fake.add_channel("G1", "group")  # a private channel
    root, reply = incident(fake, channel)
    await slack.idle()
    fake_mistral.enqueue(Reply(SUMMARY))
    fake.message_shortcut(SUMMARIZE_THREAD, "U2", channel, reply if used_on == "reply" else root)
    text = await slack.reply_in(channel, root)

    prompt = fake_mistral.requests[-1]["messages"][1]["content"]
    assert "incident: the API is slow" in prompt and "fixed by a restart" in prompt
    assert "looking into it" in prompt
    assert "lunch" not in prompt and "coffee" not in prompt
    assert len(slack.replies(channel, root)) == 1  # one message, in the thread, for all
    assert not fake.bot_messages(channel, None) and not fake.ephemerals
    assert text.startswith("**Topics**")
    assert f"[1]({slack_link(channel, root)})" in text
    assert f"[3]({slack_link(channel, reply, root)})" in text
    assert re.search(r"_Said in the thread of that message · .* · 3 messages · 1 model call", text)
    assert fake.pings == []
    [envelope] = [d for d in fake.hub.deliveries if d.kind == "interactive"]
    assert envelope.acked is not None and envelope.attempt == 0
    assert envelope.acked - envelope.sent < 1.0


async def test_slack_shortcut_over_http(slack_http: Harness, fake_mistral: FakeMistral) -> None:
    fake = slack_http.fake
    root, reply = incident(fake, "C2")
    await slack_http.idle()
    fake_mistral.enqueue(Reply(SUMMARY))
    fake.message_shortcut(SUMMARIZE_THREAD, "U1", "C2", reply)
    text = await slack_http.reply_in("C2", root)
    assert f"[1]({slack_link('C2', root)})" in text and "3 messages" in text
    assert all(d.acked for d in fake.http_deliveries)


async def test_slack_shortcut_where_the_bot_cannot_post_tells_only_the_asker(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake = slack.fake
    root, _ = incident(fake, "C1")
    await slack.idle()
    fake.fail_next("chat.postMessage", error="not_in_channel")
    fake.message_shortcut(SUMMARIZE_THREAD, "U1", "C1", root)
    await slack.wait_for(lambda: fake.responses, "a response to the shortcut")
    [response] = fake.responses
    assert response["response_type"] == "ephemeral" and "invite me" in response["text"]
    assert not fake.bot_messages("C1", root)


async def test_discord_menu_summarises_from_that_message_on_for_everyone(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    await dc.user_message(dc.general, dc.bob, "old news: the offsite moved")
    await settle()
    start = await dc.user_message(dc.general, dc.alice, "release plan: ship on friday")
    await settle()
    later = await dc.user_message(dc.general, dc.bob, "I will write the changelog")
    await settle()
    fake_mistral.enqueue(Reply("**Decisions**\n- Ship on Friday [1].\n- **bob**: changelog [2]"))
    record = await dc.message_command(
        SUMMARIZE_FROM_HERE, start["id"], user_id=dc.alice, channel_id=dc.general
    )
    [answer] = await followups(bot, dc, record)

    assert deferred(record, ephemeral=False) and not answer.ephemeral
    prompt = fake_mistral.requests[-1]["messages"][1]["content"]
    assert "release plan" in prompt and "changelog" in prompt and "old news" not in prompt
    jump = f"https://discord.com/channels/{dc.guild_id}/{dc.general}"
    assert f"[1]({jump}/{start['id']})" in answer.content
    assert f"[2]({jump}/{later['id']})" in answer.content
    assert "_Said from that message on · " in answer.content and "2 messages" in answer.content
    assert answer.pings == set()


async def test_discord_menu_is_synced_with_the_slash_commands(
    bot: Running, dc: FakeDiscord
) -> None:
    await dc.wait_until(lambda: dc.command_syncs, what="a command sync")
    [(_, synced)] = dc.command_syncs
    [menu] = [c for c in synced if c["name"] == SUMMARIZE_FROM_HERE]
    assert menu["type"] == 3  # a message command
    assert "summarize" in {c["name"] for c in synced if c.get("type", 1) == 1}
