"""Platform refusals and at most one error message per question.

A channel that refuses the bot's answer (Slack's restricted_action, not_in_channel,
channel_not_found, is_archived, msg_too_long; Discord's 403/404 codes) costs one
WARNING line naming the code, the channel and what was being done, no traceback, and on
Slack one private message to the asker where Slack allows it; the bot goes on answering
elsewhere. Whatever stage fails (model, store, delivery) the asker hears at most once.
"""

from __future__ import annotations

import logging

import pytest

from bot.engine import Engine
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc, settle
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import Error, FakeMistral, error_body
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness

pytestmark = pytest.mark.timeout(60)
__all__ = ["bot", "dc"]  # fixtures

EPHEMERAL_ALLOWED = {"restricted_action", "msg_too_long"}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "code",
    ["restricted_action", "not_in_channel", "channel_not_found", "is_archived", "msg_too_long"],
)
async def test_slack_refusal_is_one_warning_one_private_note_and_the_bot_goes_on(
    slack: Harness, fake_mistral: FakeMistral, caplog: pytest.LogCaptureFixture, code: str
) -> None:
    caplog.set_level(logging.INFO)
    slack.fake.refuse("C1", code)
    ts = slack.fake.user_message("U1", "C1", "<@UBOT> are you there?")
    await slack.wait_for(lambda: slack.fake.count("chat.postMessage", ok=False), "a refusal")
    await slack.idle(within=40)
    assert slack.replies("C1", ts) == []
    warned = [r for r in _warnings(caplog) if code in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in _warnings(caplog)]
    line = warned[0].getMessage()
    assert "Slack" in line and "C1" in line and "posting a reply" in line
    assert warned[0].exc_info is None and "Traceback" not in caplog.text
    if code in EPHEMERAL_ALLOWED:
        [note] = slack.fake.ephemerals
        assert note["user"] == "U1" and note["channel"] == "C1" and code in note["text"]
    else:
        assert slack.fake.ephemerals == []
        assert slack.fake.count("chat.postEphemeral") == 1  # tried once, refused
    # Nothing said in the channel, and the bot still answers elsewhere.
    other = slack.fake.user_message("U2", "C2", "<@UBOT> and here?")
    assert await slack.reply_in("C2", other) == "echo: [Bob]: and here?"
    assert len(fake_mistral.requests) == 2


@pytest.mark.parametrize(("code", "status"), [(50013, 403), (50001, 403), (10003, 404)])
async def test_discord_refusal_is_one_warning_and_the_bot_goes_on(
    bot: Running,
    dc: FakeDiscord,
    caplog: pytest.LogCaptureFixture,
    code: int,
    status: int,
) -> None:
    caplog.set_level(logging.INFO)
    refused = dc.add_channel("announcements")
    dc.rest.refuse(refused, code)
    await settle()
    msg = await dc.user_message(refused, dc.alice, "hello?", mention=True)
    await dc.wait_until(
        lambda: any(str(code) in r.getMessage() for r in _warnings(caplog)), what="the warning"
    )
    await dc.wait_until(lambda: bot.adapter.pacer.idle(), what="the reply to end")
    assert dc.replies_to(msg["id"]) == []
    warned = [r for r in _warnings(caplog) if str(code) in r.getMessage()]
    assert len(warned) == 1
    line = warned[0].getMessage()
    assert "Discord" in line and refused in line and "posting a reply" in line
    assert f"HTTP {status}" in line and warned[0].exc_info is None
    assert "Traceback" not in caplog.text
    ok = await dc.user_message(dc.general, dc.alice, "still there?", mention=True)
    assert await answer_to(bot, dc, ok) == "echo: [alice]: still there?"


# At most one error message per question, whichever stage fails.


async def test_slack_model_failure_is_one_message(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Error(400, error_body("bad request", "invalid_request_error")))
    ts = slack.fake.user_message("U1", "C1", "<@UBOT> fail please")
    await slack.reply_in("C1", ts)
    [only] = slack.replies("C1", ts)
    assert "rejected the request" in only.visible
    assert slack.fake.ephemerals == []


async def test_slack_store_failure_is_one_message(slack: Harness, engine: Engine) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    engine.store.add_question = broken  # type: ignore[method-assign]
    engine.store.add_message = broken  # type: ignore[method-assign]
    ts = slack.fake.user_message("U1", "C1", "<@UBOT> store this")
    await slack.wait_for(lambda: slack.replies("C1", ts), "the apology")
    await slack.idle()
    [only] = slack.replies("C1", ts)
    assert "went wrong" in only.visible
    assert slack.fake.ephemerals == []


async def test_slack_delivery_failure_is_one_message(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.refuse("C1", "restricted_action")
    ts = slack.fake.user_message("U1", "C1", "<@UBOT> deliver this")
    await slack.wait_for(lambda: slack.fake.ephemerals, "the private note")
    await slack.idle()
    assert slack.replies("C1", ts) == [] and len(slack.fake.ephemerals) == 1
    assert slack.fake.count("chat.postMessage") == 1  # no apology tried after the refusal


async def test_discord_model_failure_is_one_message(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Error(400, error_body("bad request", "invalid_request_error")))
    msg = await dc.user_message(dc.general, dc.alice, "fail please", mention=True)
    text = await answer_to(bot, dc, msg)
    assert len(dc.replies_to(msg["id"])) == 1 and "rejected the request" in text


async def test_discord_store_failure_is_one_message(
    bot: Running, dc: FakeDiscord, engine: Engine
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    engine.store.add_question = broken  # type: ignore[method-assign]
    msg = await dc.user_message(dc.general, dc.alice, "store this", mention=True)
    text = await answer_to(bot, dc, msg)
    await settle()
    assert len(dc.replies_to(msg["id"])) == 1 and "went wrong" in text


async def test_discord_delivery_failure_is_no_second_message(
    bot: Running, dc: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    dc.rest.refuse(dc.general, 50013)
    msg = await dc.user_message(dc.general, dc.alice, "deliver this", mention=True)
    await dc.wait_until(lambda: "50013" in caplog.text, what="the refusal")
    await dc.wait_until(lambda: bot.adapter.pacer.idle(), what="the reply to end")
    await settle()
    sends = [r for r in dc.requests if r.method == "POST" and r.path.endswith("/messages")]
    assert len(sends) == 1 and dc.replies_to(msg["id"]) == []
