"""Voice: Discord voice messages and Slack audio clips transcribed by the fake Voxtral
endpoint from real Ogg Opus bytes; the transcript is the stored question and is quoted
back in the reply; too-long or failed clips are one note and the question is answered."""

from __future__ import annotations

import pytest

from bot.audio import TRANSCRIPTION_MODEL, heard, ogg_seconds
from bot.engine import Engine
from bot.types import ConversationKey
from tests.conftest import EngineFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.mistral import FakeMistral, text_of
from tests.fakes.mistral_files import FileError, Transcription
from tests.fakes.slack import FakeSlack
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture
from tests.fakes.slack.harness import Harness
from tests.fixtures import media

pytestmark = pytest.mark.timeout(60)
__all__ = ["bot", "dc", "fake_slack_fixture", "slack_fixture"]  # fixtures

SAID = "Can you remind me when the design review is?"


def last_prompt(fake: FakeMistral) -> str:
    return text_of(fake.requests[-1]["messages"][-1]["content"])


async def transcription_totals(engine: Engine) -> tuple[int, float]:
    totals = await engine.store.usage_totals(kind="transcription")
    return totals.calls, totals.cost_usd


def test_ogg_length_and_the_quote() -> None:
    assert ogg_seconds(media.ogg_opus(3.0)) == pytest.approx(3.0)
    assert ogg_seconds(media.ogg_opus(700)) == pytest.approx(700.0)
    assert ogg_seconds(b"ID3 not an ogg") is None
    assert heard("  hello\n there ") == "🎙 “hello there”"
    long = heard("word " * 200)
    assert long.endswith("…”") and len(long) < 320


async def test_fake_transcription_validates_like_the_api(fake_mistral: FakeMistral) -> None:
    import httpx

    url = fake_mistral.base_url + "/audio/transcriptions"
    clip = media.ogg_opus(1.0)
    async with httpx.AsyncClient() as client:
        as_json = await client.post(url, json={"model": TRANSCRIPTION_MODEL})
        no_file = await client.post(url, data={"model": TRANSCRIPTION_MODEL})
        extra = await client.post(
            url,
            data={"model": TRANSCRIPTION_MODEL, "speed": "2"},
            files={"file": ("a.ogg", clip, "audio/ogg")},
        )
        both = await client.post(
            url,
            data={
                "model": TRANSCRIPTION_MODEL,
                "language": "en",
                "timestamp_granularities": "word",
            },
            files={"file": ("a.ogg", clip, "audio/ogg")},
        )
        good = await client.post(
            url, data={"model": TRANSCRIPTION_MODEL}, files={"file": ("a.ogg", clip, "audio/ogg")}
        )
    assert (as_json.status_code, no_file.status_code) == (400, 400)
    assert extra.status_code == 422 and "extra_forbidden" in extra.text
    assert both.status_code == 400
    body = good.json()
    assert body["text"] == "(transcript of a.ogg)" and body["usage"]["prompt_audio_seconds"] == 1


async def test_a_discord_voice_message_is_answered_with_its_transcript_shown(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral, engine: Engine
) -> None:
    fake_mistral.files.enqueue_transcription(Transcription(SAID))
    clip = media.ogg_opus(4.2)
    channel = dc.dm(dc.alice)
    msg = await dc.user_voice_message(channel, dc.alice, clip, 4.2)
    text = await answer_to(bot, dc, msg)
    [sent] = fake_mistral.files.transcriptions
    assert sent["fields"] == {"model": TRANSCRIPTION_MODEL}
    assert (sent["filename"], sent["content_type"], sent["data"]) == (
        "voice-message.ogg",
        "audio/ogg",
        clip,
    )
    assert text.splitlines()[0] == f"-# 🎙 “{SAID}”"
    assert f"echo: {SAID}" in text
    assert last_prompt(fake_mistral) == SAID
    stored = await engine.store.messages(str(ConversationKey("discord", "", channel)))
    assert [m.text for m in stored if m.role == "user"] == [SAID]
    calls, cost = await transcription_totals(engine)
    assert calls == 1 and cost == pytest.approx(5 / 60 * 0.003)  # billed as the API reports


async def test_an_over_long_discord_clip_is_a_note_and_not_downloaded(
    make_engine: EngineFactory, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    engine = await make_engine(audio_seconds=60)
    running = await start_adapter(engine, dc)
    try:
        msg = await dc.user_voice_message(dc.dm(dc.alice), dc.alice, media.ogg_opus(2.0), 125.0)
        text = await answer_to(running, dc, msg)
    finally:
        await running.stop()
    assert fake_mistral.files.transcriptions == []
    assert "-# voice-message.ogg is 2:05 long; I transcribe up to 1:00, so it was left out." in text
    assert "echo: [voice-message.ogg: a 2:05 recording, left out]" in text  # still answered
    assert await transcription_totals(engine) == (0, 0.0)


async def test_a_failed_transcription_is_a_note_and_the_question_is_answered(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.files.enqueue_transcription(FileError(503, {"message": "down"}))
    msg = await dc.user_voice_message(dc.dm(dc.alice), dc.alice, media.ogg_opus(1.0), 1.0)
    text = await answer_to(bot, dc, msg)
    notes = [line for line in text.splitlines() if line.startswith("-#")]
    assert notes == [
        "-# voice-message.ogg couldn't be transcribed (the service answered HTTP 503)."
    ]
    assert "could not be transcribed" in last_prompt(fake_mistral)
    assert "echo:" in text


async def test_a_slack_audio_clip_is_transcribed_and_quoted(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.files.enqueue_transcription(Transcription(SAID))
    clip = media.ogg_opus(3.0)
    file = slack.fake.add_file(
        "audio_message.webm", "video/mp4", clip, subtype="slack_audio", duration_ms=3000
    )
    ts = slack.fake.user_message("U1", "D1", "", files=[file])
    await slack.reply_in("D1", ts)
    [quote, answer] = [m.visible for m in slack.replies("D1", ts)]
    assert quote == f"🎙 “{SAID}”"
    assert answer.startswith(f"echo: {SAID}")
    [sent] = fake_mistral.files.transcriptions
    assert sent["content_type"] == "video/mp4" and sent["data"] == clip
    stored = await slack.engine.store.messages(
        str(ConversationKey("slack", slack.fake.team_id, "D1"))
    )
    assert [m.text for m in stored if m.role == "user"] == [SAID]


async def test_slack_over_long_audio_is_a_note_by_clip_length_or_ogg_length(
    fake_slack: FakeSlack, make_engine: EngineFactory, fake_mistral: FakeMistral
) -> None:
    harness = Harness(fake_slack, await make_engine(audio_seconds=600))
    await harness.start()
    try:
        clip = fake_slack.add_file(
            "audio_message.m4a",
            "audio/mp4",
            b"\x00" * 64,
            subtype="slack_audio",
            duration_ms=700_000,
        )
        ts = fake_slack.user_message("U1", "C1", "<@UBOT> what did I say?", files=[clip])
        await harness.reply_in("C1", ts)
        [note, answer] = [m.visible for m in harness.replies("C1", ts)]
        assert note == (
            ":warning: audio_message.m4a is 11:40 long; I transcribe up to 10:00, "
            "so it was left out."
        )
        assert "what did I say?" in answer
        memo = fake_slack.add_file("memo.ogg", "audio/ogg", media.ogg_opus(660))
        ts = fake_slack.user_message("U1", "D1", "summarise my memo", files=[memo])
        await harness.reply_in("D1", ts)
        [note, answer] = [m.visible for m in harness.replies("D1", ts)]
    finally:
        await harness.stop()
    assert note.startswith(":warning: memo.ogg is 11:00 long;")
    assert "summarise my memo" in answer
    assert fake_mistral.files.transcriptions == []
