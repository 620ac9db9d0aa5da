"""Socket Mode and signed HTTP delivery: acks, retries, reconnects, signatures, restarts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

from tests.conftest import EngineFactory
from tests.fakes.mistral import FakeMistral, text_of
from tests.fakes.slack import FakeSlack, post_signed, sign
from tests.fakes.slack.fixtures import (  # noqa: F401
    fake_slack_fixture,
    slack_fixture,
    slack_http_fixture,
)
from tests.fakes.slack.harness import Harness

BOT = "<@UBOT>"


async def test_every_envelope_acked_on_first_delivery(slack: Harness) -> None:
    asked = [slack.fake.user_message("U1", "C1", f"{BOT} question {i}") for i in range(3)]
    slack.fake.user_message("U2", "C1", "just chatting")
    await slack.wait_for(lambda: all(slack.replies("C1", ts) for ts in asked), "answers")
    await slack.idle()
    assert len(slack.fake.hub.deliveries) >= 7
    assert all(d.attempt == 0 and d.acked for d in slack.fake.hub.deliveries)


async def test_socket_reconnect_loses_no_event(slack: Harness, fake_mistral: FakeMistral) -> None:
    fake = slack.fake
    fake_mistral.token_interval = 0.01
    sent = []
    for i in range(4):
        fake.add_channel(f"CR{i}")
    sent.append(("CR0", fake.user_message("U1", "CR0", f"{BOT} before")))
    disconnecting = asyncio.create_task(fake.hub.disconnect(close_after=0.3))
    await asyncio.sleep(0.01)
    sent.append(("CR1", fake.user_message("U1", "CR1", f"{BOT} during")))
    await disconnecting
    sent.append(("CR2", fake.user_message("U1", "CR2", f"{BOT} after")))
    await fake.hub.drop()  # and a blip without warning
    sent.append(("CR3", fake.user_message("U1", "CR3", f"{BOT} after drop")))
    await slack.wait_for(lambda: all(slack.replies(c, ts) for c, ts in sent), "answers", 20)
    await slack.idle()
    assert fake.hub.connects >= 3
    for channel, ts in sent:
        assert len(slack.replies(channel, ts)) == 1
    asked = sorted(text_of(r["messages"][-1]["content"]) for r in fake_mistral.requests)
    assert asked == sorted(f"[Alice]: {w}" for w in ("before", "during", "after", "after drop"))


async def test_http_events_answered_and_retries_deduplicated(
    slack_http: Harness, fake_mistral: FakeMistral
) -> None:
    fake = slack_http.fake
    ts = fake.user_message("U1", "C1", f"{BOT} over http")
    text = await slack_http.reply_in("C1", ts)
    assert text == "echo: [Alice]: over http"
    assert all(d.acked for d in fake.http_deliveries)
    # Slack retries a delivery it thinks failed: same event id, X-Slack-Retry-Num set.
    event = {
        "type": "app_mention",
        "channel": "C1",
        "user": "U1",
        "text": f"{BOT} over http",
        "ts": ts,
        "event_ts": ts,
        "team": fake.team_id,
    }
    from tests.fakes.slack.delivery import event_callback

    body = json.dumps(event_callback(fake.team_id, fake.bot_user_id, event, "EvRETRY"))
    async with aiohttp.ClientSession() as session:
        for attempt in (0, 1):
            status, _ = await post_signed(
                session,
                fake.http_url,
                body,
                secret=fake.signing_secret,
                retry=(attempt, "http_timeout") if attempt else None,
            )
            assert status == 200
    await slack_http.idle()
    assert len(fake_mistral.requests) == 1
    assert len(slack_http.replies("C1", ts)) == 1


async def test_http_signatures_are_verified(slack_http: Harness, fake_mistral: FakeMistral) -> None:
    fake = slack_http.fake
    ts = fake.add_user_message("U1", "C1", f"{BOT} forged")
    event = {
        "type": "app_mention",
        "channel": "C1",
        "user": "U1",
        "text": f"{BOT} forged",
        "ts": ts,
        "event_ts": ts,
        "team": fake.team_id,
    }
    from tests.fakes.slack.delivery import event_callback

    body = json.dumps(event_callback(fake.team_id, fake.bot_user_id, event, "EvFORGED"))
    stale = str(int(time.time()) - 600)
    async with aiohttp.ClientSession() as session:
        url, secret = fake.http_url, fake.signing_secret
        bad = await post_signed(session, url, body, secret=secret, signature="v0=" + "0" * 64)
        missing = await post_signed(session, url, body, secret=secret, signature="")
        old = await post_signed(session, url, body, secret=secret, timestamp=stale)
        wrong_key = await post_signed(session, url, body, secret="not-the-secret")
        assert [bad[0], missing[0], old[0], wrong_key[0]] == [401, 401, 401, 401]
        challenge = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"})
        status, text = await post_signed(session, url, challenge, secret=secret)
        assert status == 200 and "c-123" in text
    await asyncio.sleep(0.2)
    await slack_http.idle()
    assert fake_mistral.requests == []
    assert slack_http.replies("C1", ts) == []
    assert sign(secret, "1", "x").startswith("v0=")


async def test_restart_keeps_thread_context(
    fake_slack: FakeSlack, make_engine: EngineFactory, fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    db = tmp_path / "restart.db"
    harness = Harness(fake_slack, await make_engine(db))
    await harness.start()
    ts = fake_slack.user_message("U1", "C1", f"{BOT} the password is swordfish")
    await harness.reply_in("C1", ts)
    await harness.stop()
    await harness.engine.aclose()

    await harness.start(await make_engine(db))  # a new process: new engine, new adapter
    fake_slack.user_message("U2", "C1", "what was the password?", thread_ts=ts)
    await harness.wait_for(lambda: len(harness.replies("C1", ts)) == 2, "answer after restart")
    await harness.idle()
    await harness.stop()
    seen = " ".join(text_of(m["content"]) for m in fake_mistral.requests[-1]["messages"])
    assert "swordfish" in seen and "[Bob]: what was the password?" in seen
    assert len(fake_mistral.requests) == 2


async def test_shutdown_mid_answer_leaves_the_text_and_a_notice(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.05
    fake_mistral.default_tokens = 400  # 20 s: still streaming when the bot stops
    ts = slack.fake.user_message("U1", "C1", f"{BOT} long story")
    await slack.wait_for(lambda: slack.replies("C1", ts), "first text")
    await slack.engine.shutdown(grace=0.1)  # what `teambot run` does on SIGTERM
    await slack.stop()
    [message] = slack.replies("C1", ts)
    assert message.visible.startswith("echo: [Alice]: long")
    assert message.visible.endswith(
        "_(The bot restarted mid-answer, so this reply is incomplete.)_"
    )


async def test_unacked_envelope_is_redelivered_and_answered_once(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.hub.lose_next = 2  # both deliveries of the mention vanish once
    ts = slack.fake.user_message("U1", "C1", f"{BOT} lost and found")
    text = await slack.reply_in("C1", ts)
    assert text == "echo: [Alice]: lost and found"
    retries = [d for d in slack.fake.hub.deliveries if d.attempt == 1]
    assert len(retries) == 2 and all(d.acked for d in retries)
    assert len(fake_mistral.requests) == 1
