"""Text repaired at the door: lone surrogates and undecodable bytes become U+FFFD.

A lone UTF-16 surrogate is valid in a JSON escape ("\\ud800"); each platform's fake sends
it that way on the wire, and the real clients decode it into a str that no database or
HTTP client can encode. Each path must answer once, store the repaired text, and never
apologise twice.
"""

from __future__ import annotations

import json

import pytest

from bot.engine import Engine
from bot.text import REPLACEMENT, decode, repair, repair_value, usd
from bot.types import Author, ConversationKey, Message
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import FakeMistral, Reply
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture, slack_http_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness

pytestmark = pytest.mark.timeout(60)
__all__ = ["bot", "dc"]  # fixtures

LONE = "bad \ud800 text \udfff end"
SORRY = ("Sorry", "went wrong", "failed")


def test_repair_replaces_each_lone_surrogate_and_keeps_pairs_and_valid_text() -> None:
    assert repair(LONE) == f"bad {REPLACEMENT} text {REPLACEMENT} end"
    assert repair("pair \ud83d\ude00 joined") == "pair 😀 joined"
    valid = "naïve café 😀"
    assert repair(valid) is valid
    assert repair(LONE).encode("utf-8")  # encodable now
    assert repair_value({"a\ud800": ["x\udc00", 1, None]}) == {
        f"a{REPLACEMENT}": [f"x{REPLACEMENT}", 1, None]
    }


def test_decode_replaces_undecodable_bytes() -> None:
    assert decode(b"ok \xff\xfe \xed\xa0\x80 end") == "ok \ufffd\ufffd \ufffd\ufffd\ufffd end"


def test_message_author_and_place_are_repaired_where_they_are_built() -> None:
    message = Message(key=None, id="1", author=Author("u", "Al\ud800"), text=LONE)  # type: ignore[arg-type]
    assert message.text == repair(LONE) and message.author.name == f"Al{REPLACEMENT}"


@pytest.mark.parametrize(
    ("amount", "shown"),
    [(0.000045, "0.000045"), (0.0012, "0.0012"), (0.0, "0.0000"), (1.23456, "1.2346")],
)
def test_costs_below_a_cent_keep_two_significant_digits(amount: float, shown: str) -> None:
    assert usd(amount) == shown


def _stored_texts(rows: list) -> list[str]:
    return [row.text for row in rows]


async def _assert_answered_once(harness: Harness, engine: Engine, ts: str, key: str) -> None:
    replies = harness.replies("C1", ts)
    assert len(replies) == 1, [r.visible for r in replies]
    text = replies[0].visible
    assert REPLACEMENT in text and not any(word in text for word in SORRY)
    rows = await engine.store.messages(key)
    assert [r.role for r in rows][-2:] == ["user", "assistant"]
    assert any(REPLACEMENT in t for t in _stored_texts(rows))
    assert not harness.fake.ephemerals


async def test_lone_surrogate_over_socket_mode_is_answered_once_and_stored_repaired(
    slack: Harness, engine: Engine, fake_mistral: FakeMistral
) -> None:
    ts = slack.fake.user_message("U1", "C1", f"<@UBOT> {LONE}")
    await slack.reply_in("C1", ts)
    wire = [d for d in slack.fake.hub.deliveries if d.payload["event"]["ts"] == ts]
    assert "\\ud800" in json.dumps(wire[0].payload)  # a JSON escape on the wire
    assert len(fake_mistral.requests) == 1
    await _assert_answered_once(slack, engine, ts, f"slack:T0FAKE:C1:{ts}")


async def test_lone_surrogate_over_http_events_is_answered_once_and_stored_repaired(
    slack_http: Harness, engine: Engine, fake_mistral: FakeMistral
) -> None:
    ts = slack_http.fake.user_message("U1", "C1", f"<@UBOT> {LONE}")
    await slack_http.reply_in("C1", ts)
    assert len(fake_mistral.requests) == 1
    await _assert_answered_once(slack_http, engine, ts, f"slack:T0FAKE:C1:{ts}")


async def test_lone_surrogate_in_a_slash_command_is_repaired(
    slack: Harness, engine: Engine, fake_mistral: FakeMistral
) -> None:
    slack.fake.slash_command("/system", "be brief \ud800", "U1", "D1")
    await slack.wait_for(lambda: slack.fake.responses, "the command's answer")
    await slack.idle()
    settings = await engine.conversation_settings(ConversationKey("slack", "T0FAKE", "D1"))
    assert settings.system == f"be brief {REPLACEMENT}"


async def test_lone_surrogate_over_the_discord_gateway_is_answered_once_and_stored(
    bot: Running, dc: FakeDiscord, engine: Engine, fake_mistral: FakeMistral
) -> None:
    msg = await dc.user_message(dc.general, dc.alice, LONE, mention=True)
    text = await answer_to(bot, dc, msg)
    assert len(dc.replies_to(msg["id"])) == 1
    assert REPLACEMENT in text and not any(word in text for word in SORRY)
    assert len(fake_mistral.requests) == 1
    rows = [r for key in await _conversations(engine) for r in await engine.store.messages(key)]
    assert any(r.role == "user" and REPLACEMENT in r.text for r in rows)
    assert any(r.role == "assistant" for r in rows)


async def _conversations(engine: Engine) -> list[str]:
    store = engine.store
    rows = await store._run(  # type: ignore[attr-defined]
        lambda: [r["key"] for r in store.db.query("SELECT key FROM conversations")]  # type: ignore[attr-defined]
    )
    return list(rows)


async def test_model_output_with_a_lone_surrogate_escape_is_stored_and_shown_repaired(
    slack: Harness, engine: Engine, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("the model says \ud800 oddly"))
    ts = slack.fake.user_message("U1", "C1", "<@UBOT> hi")
    text = await slack.reply_in("C1", ts)
    assert text == f"the model says {REPLACEMENT} oddly"
    rows = await engine.store.messages(f"slack:T0FAKE:C1:{ts}")
    assert rows[-1].role == "assistant" and rows[-1].text == f"the model says {REPLACEMENT} oddly"
