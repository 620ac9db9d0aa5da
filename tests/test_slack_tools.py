"""Slack: search and permalinks through slack-bolt (Socket Mode), FakeSlack and FakeMistral.

G1 is a private channel and D9 someone else's DM; their canaries must never reach the
model from anywhere else.
"""

from __future__ import annotations

import json

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import places
from bot.types import PRIVATE, PUBLIC
from tests.fakes.mistral import FakeMistral, Reply, ToolCall, ToolCalls
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness

BOT = "<@UBOT>"


def tool_results(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def permalink(channel: str, ts: str) -> str:
    return f"https://fake.slack.test/archives/{channel}/p{ts.replace('.', '')}"


async def test_search_cites_a_permalink_and_shows_its_activity_as_the_status(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.streaming_enabled = False  # posted, so that unfurling can be checked
    note = slack.fake.user_message("U2", "C2", "we ship the release on friday")
    await slack.idle()
    fake_mistral.enqueue(
        ToolCalls([ToolCall("search_messages", {"query": "release"})]),
        Reply(f"Friday, as Bob said: <{permalink('C2', note)}>"),
    )
    ts = slack.fake.user_message("U1", "C1", f"{BOT} when is the release?")
    text = await slack.reply_in("C1", ts)
    (result,) = tool_results(fake_mistral.requests[-1])
    assert "we ship the release on friday" in result and "#c2" in result
    assert permalink("C2", note) in result
    assert "🔧 search_messages" in text
    statuses = [status for _, where, status in slack.fake.statuses if where == ("C1", ts)]
    assert "is searching for “release”…" in statuses
    posts = [c for c in slack.fake.calls if c.method == "chat.postMessage" and c.ok]
    assert posts and all(c.args.get("unfurl_links") in (False, "false", "0") for c in posts)
    assert slack.fake.pings == []


async def test_a_private_channel_and_a_dm_stay_out_of_other_conversations(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.add_channel("G1", "group")
    secret = slack.fake.user_message("U2", "G1", "CANARY zebra-private-roadmap")
    slack.fake.user_message("U3", "D9", "CANARY zebra-dm-salary")  # answered: a DM
    slack.fake.user_message("U2", "C2", "CANARY public note")
    await slack.idle()
    before = len(fake_mistral.requests)
    fake_mistral.enqueue(
        ToolCalls(
            [
                ToolCall("search_messages", {"query": "CANARY"}),
                ToolCall("read_messages", {"link": permalink("G1", secret)}),
            ]
        ),
        Reply("done"),
    )
    ts = slack.fake.user_message("U1", "C1", f"{BOT} find the canary")
    await slack.reply_in("C1", ts)
    found, linked = tool_results(fake_mistral.requests[-1])
    assert "CANARY public note" in found
    assert "not available" in linked
    asked_in_c1 = fake_mistral.requests[before:]
    assert len(asked_in_c1) == 2 and "zebra" not in json.dumps(asked_in_c1)
    # Inside the private channel, its own canary is there to find.
    fake_mistral.enqueue(ToolCalls([ToolCall("search_messages", {"query": "CANARY"})]), Reply("ok"))
    inside = slack.fake.user_message("U2", "G1", f"{BOT} and here?")
    await slack.reply_in("G1", inside)
    assert "zebra-private-roadmap" in tool_results(fake_mistral.requests[-1])[0]
    assert "zebra-dm-salary" not in json.dumps(fake_mistral.requests[before:])


async def test_channel_lookups_stay_under_slacks_limit_and_fail_closed(fake_slack) -> None:
    for n in range(places.LOOKUPS_PER_MINUTE + 5):
        fake_slack.add_channel(f"C{100 + n}")
    fake_slack.add_channel("G1", "group")
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    channels = places.Channels(client)
    looked_up = [await channels.place(f"C{100 + n}") for n in range(places.LOOKUPS_PER_MINUTE)]
    assert all(p is not None and p.visibility == PUBLIC for p in looked_up)
    assert looked_up[0] is not None and looked_up[0].name == "c100"
    # Over the budget: no call, and the channel counts as private (None) until it can be asked.
    assert await channels.place(f"C{100 + places.LOOKUPS_PER_MINUTE}") is None
    assert fake_slack.count("conversations.info") == places.LOOKUPS_PER_MINUTE
    assert fake_slack.count("conversations.info", ok=False) == 0
    # An event's own channel_type still says who can read it, without a call.
    seen = await channels.place("G1", "group")
    assert seen is not None and seen.visibility == PRIVATE
    assert fake_slack.count("conversations.info") == places.LOOKUPS_PER_MINUTE
    # A cached channel costs nothing.
    assert await channels.place("C100") == looked_up[0]
    assert fake_slack.count("conversations.info") == places.LOOKUPS_PER_MINUTE
