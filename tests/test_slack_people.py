"""Slack name lookups (real slack-sdk client against the fake) and the engaged-thread memory."""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.people import Names
from adapters.slack.runtime import RecentKeys
from bot.types import ConversationKey
from tests.fakes.slack.server import FakeSlack


async def test_names_are_cached_then_refreshed_in_the_background() -> None:
    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        names = Names(client, max_age=0.2)
        assert await names.many(["U1", "U2", "U1"]) == {"U1": "Alice", "U2": "Bob"}
        assert fake.count("users.info") == 2
        fake.users["U2"] = "Robert"
        assert await names.get("U2") == "Bob"  # fresh enough: no lookup
        assert fake.count("users.info") == 2
        await asyncio.sleep(0.25)
        assert await names.get("U2") == "Bob"  # stale: answered at once, refreshed behind
        for _ in range(100):
            if fake.count("users.info") == 3 and names.cache["U2"][0] == "Robert":
                break
            await asyncio.sleep(0.01)
        assert await names.get("U2") == "Robert"


async def test_unknown_user_falls_back_to_the_id_and_is_asked_again() -> None:
    async with FakeSlack() as fake:
        names = Names(AsyncWebClient(token=fake.bot_token, base_url=fake.api_url))
        assert await names.get("U404") == "U404"
        fake.users["U404"] = "Newcomer"
        assert await names.get("U404") == "Newcomer"


def test_recent_keys_forget_the_least_recently_used() -> None:
    keys = [ConversationKey("slack", "T1", "C1", f"{n}.0") for n in range(4)]
    recent = RecentKeys(limit=3)
    for key in keys[:3]:
        recent.add(key)
    assert keys[0] in recent  # touching it makes keys[1] the oldest
    recent.add(keys[3])
    assert len(recent) == 3
    assert keys[1] not in recent
    assert all(k in recent for k in (keys[0], keys[2], keys[3]))
