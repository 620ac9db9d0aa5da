"""Discord adapter: streamed replies under Discord's real rate limits."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import FakeMistral, Reply

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures

WORDS = " ".join(f"w{i}" for i in range(120))


def slow(fake: FakeMistral) -> None:
    fake.first_token_delay = 0.3
    fake.token_interval = 0.02


async def test_answer_grows_by_edits_and_lands_complete(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    slow(fake_mistral)
    fake_mistral.enqueue(Reply(WORDS))
    msg = await dc.user_message(dc.general, dc.alice, "stream please", mention=True)
    assert await answer_to(bot, dc, msg) == WORDS
    [reply] = dc.replies_to(msg["id"])
    versions = [text for _, text in reply.history]
    assert len(versions) >= 3, versions  # visible early, then grew
    assert all(WORDS.startswith(v) for v in versions)
    first_visible = reply.history[0][0]
    assert first_visible < fake_mistral.last_token_times[-1]  # shown before the model finished
    # Typing is shown while waiting for the first token, before the reply exists.
    typing = dc.requests_to("POST", f"/channels/{dc.general}/typing")
    assert typing and typing[0].at < reply.created
    assert dc.rate_limited == 0


async def test_429_on_an_edit_is_survived_and_final_text_lands(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    slow(fake_mistral)
    fake_mistral.enqueue(Reply(WORDS))
    dc.inject_429("edit", count=1, retry_after=0.3)
    msg = await dc.user_message(dc.general, dc.alice, "go", mention=True)
    assert await answer_to(bot, dc, msg) == WORDS
    assert dc.injected_429s == 1
    assert [r for r in dc.requests if r.status == 429 and "/messages/" in r.path]
    assert dc.rate_limited == 0


async def test_back_to_back_replies_share_the_channel_bucket_without_429s(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.01
    fake_mistral.default_tokens = 60
    asks = [
        await dc.user_message(dc.general, dc.alice, f"question {i}", mention=True) for i in range(4)
    ]
    texts = await asyncio.gather(*(answer_to(bot, dc, m) for m in asks))
    for i, text in enumerate(texts):
        assert f"question {i}" in text and text.endswith("more")
    sends_and_edits = [r for r in dc.requests if f"/channels/{dc.general}/messages" in r.path]
    assert len(sends_and_edits) > 5  # more than one bucket's worth was needed...
    assert dc.rate_limited == 0  # ...and none of it earned a 429


async def test_parallel_channels_and_threads_stream_independently(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    slow(fake_mistral)
    fake_mistral.default_tokens = 40
    where = [dc.general, dc.by_name["random"], dc.thread, dc.dm(dc.bob)]
    asks = await asyncio.gather(
        *(dc.user_message(c, dc.bob, f"hello {i}", mention=True) for i, c in enumerate(where))
    )
    texts = await asyncio.gather(*(answer_to(bot, dc, m) for m in asks))
    for i, (text, channel) in enumerate(zip(texts, where, strict=True)):
        assert f"hello {i}" in text
        assert all(f"hello {j}" not in text for j in range(4) if j != i)
        assert all(p.channel_id == channel for p in dc.replies_to(asks[i]["id"]))
    assert dc.rate_limited == 0
