"""Discord adapter: attachments and errors as users see them."""

from __future__ import annotations

import pytest

from bot.errors import ContextTooLong, ModelRateLimited, ModelUnavailable, StreamCut
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import Disconnect, Error, FakeMistral, error_body
from tests.fixtures import media
from tests.helpers import prompt_text

pytestmark = pytest.mark.timeout(30)
__all__ = ["bot", "dc"]  # fixtures

PNG = media.png()  # a real image: images are decoded before they are sent
JPEG = media.jpeg()


async def test_images_and_text_files_reach_the_model(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    files = [
        ("a.png", "image/png", PNG),
        ("b.jpg", "image/jpeg", JPEG),
        ("notes.md", "text/markdown", b"# Plan\nship the ORANGE feature"),
    ]
    msg = await dc.user_message(dc.general, dc.alice, "look", mention=True, attachments=files)
    text = await answer_to(bot, dc, msg)
    assert "-#" not in text  # nothing was declined
    parts = fake_mistral.requests[-1]["messages"][-1]["content"]
    images = [p["image_url"] for p in parts if p["type"] == "image_url"]
    assert [i.split(";")[0] for i in images] == ["data:image/png", "data:image/jpeg"]
    assert "ship the ORANGE feature" in prompt_text(fake_mistral.requests[-1])


async def test_a_reply_brings_the_replied_to_messages_image(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    shot = await dc.user_message(
        dc.general, dc.bob, "my screenshot", attachments=[("shot.png", "image/png", PNG)]
    )
    ask = await dc.user_message(
        dc.general, dc.alice, "what is in this?", mention=True, reply_to=shot["id"]
    )
    await answer_to(bot, dc, ask)
    parts = fake_mistral.requests[-1]["messages"][-1]["content"]
    images = [p["image_url"] for p in parts if p["type"] == "image_url"]
    assert [i.split(";")[0] for i in images] == ["data:image/png"]
    # A plain mention without a reply brings no image along.
    plain = await dc.user_message(dc.general, dc.alice, "and now?", mention=True)
    await answer_to(bot, dc, plain)
    parts = fake_mistral.requests[-1]["messages"][-1]["content"]
    assert isinstance(parts, str) or not [p for p in parts if p["type"] == "image_url"]


async def test_declined_attachments_get_a_visible_note(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    huge = PNG + b"\x00" * (11 * 1024 * 1024)
    files = [("huge.png", "image/png", huge), ("report.pdf", "application/pdf", b"%PDF-1.7")]
    files += [(f"p{i}.png", "image/png", PNG) for i in range(9)]
    msg = await dc.user_message(dc.general, dc.alice, "see these", mention=True, attachments=files)
    text = await answer_to(bot, dc, msg)
    lines = text.splitlines()
    assert any(line.startswith("-# huge.png is too large") for line in lines)
    assert any(line.startswith("-# report.pdf") for line in lines)
    assert any(line.startswith("-# p8.png was left out") for line in lines)
    parts = fake_mistral.requests[-1]["messages"][-1]["content"]
    assert len([p for p in parts if p["type"] == "image_url"]) == 8
    assert "see these" in text  # the answer still comes


async def test_model_rate_limit_is_one_short_sentence(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(*[Error(429, error_body("slow down", "rate_limited"))] * 20)
    msg = await dc.user_message(dc.general, dc.alice, "hello?", mention=True)
    assert await answer_to(bot, dc, msg) == ModelRateLimited.user_message


async def test_context_too_long_is_one_short_sentence(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    body = error_body(
        "Prompt contains 300000 tokens, too large for model with 262144 maximum context length",
        "invalid_request_error",
    )
    fake_mistral.enqueue(Error(400, body), Error(400, body))
    msg = await dc.user_message(dc.general, dc.alice, "huge question", mention=True)
    assert await answer_to(bot, dc, msg) == ContextTooLong.user_message


async def test_model_down_is_one_short_sentence(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(*[Error(503, error_body("down", "server_error"))] * 50)
    msg = await dc.user_message(dc.general, dc.alice, "anyone?", mention=True)
    assert await answer_to(bot, dc, msg) == ModelUnavailable.user_message


async def test_answer_cut_mid_stream_keeps_its_text_and_says_so(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Disconnect(after_text="The first half of"))
    msg = await dc.user_message(dc.general, dc.alice, "tell me", mention=True)
    text = await answer_to(bot, dc, msg)
    assert text == f"The first half of\n\n*({StreamCut.user_message})*"
