"""Spending limits: degrade, refuse, hold under concurrency (also two engines on one
database), run-time overrides with an audit trail, and what survives a restart."""

from __future__ import annotations

import asyncio

from bot.types import Author, ReplyDone, ReplyFailed
from tests.fakes.discord.fixtures import dc
from tests.fakes.mistral import Reply
from tests.fakes.slack.fixtures import fake_slack_fixture
from tests.helpers import ALICE, collect, final, key, message

__all__ = ["dc", "fake_slack_fixture"]  # fixtures

OUT_PRICE = 0.60 / 1e6
ADMIN = Author("A1", "Admin")


def worst_case_usage(fake_mistral) -> None:
    """Every answer costs exactly its whole output budget (and no prompt), as if the model
    always wrote max_tokens: the hardest case for a limit."""

    def reply(body):
        return Reply("ok", usage={"prompt_tokens": 0, "completion_tokens": body["max_tokens"]})

    fake_mistral._default_reply = reply


async def spent_by(engine, user_id: str) -> float:
    rows = await engine.store._run(
        engine.store._rows,
        "SELECT coalesce(sum(cost_usd), 0) AS s FROM usage WHERE user_id = ?",
        [user_id],
    )
    return float(rows[0]["s"])


async def test_near_the_limit_a_reply_is_made_smaller_then_refused(make_engine, fake_mistral):
    engine = await make_engine(
        user_daily_usd=0.0020, max_output_tokens=2000, reasoning=True, timezone="Europe/Paris"
    )
    worst_case_usage(fake_mistral)
    first = final(await collect(engine, message("one")))  # 2000 tokens: $0.0012 of $0.0020
    assert isinstance(first, ReplyDone)
    assert fake_mistral.requests[-1]["max_tokens"] == 2000
    assert fake_mistral.requests[-1]["reasoning_effort"] == "high"
    second = final(await collect(engine, message("two")))  # only ~$0.0008 left: smaller
    assert isinstance(second, ReplyDone)
    cut = fake_mistral.requests[-1]
    assert 256 <= cut["max_tokens"] < 1400 and cut["reasoning_effort"] == "none"
    asked = len(fake_mistral.requests)
    third = final(await collect(engine, message("three")))
    assert isinstance(third, ReplyFailed)
    assert (
        third.notice.startswith("You have used $0.00")
        and "of your $0.00 daily limit" in third.notice
    )
    assert third.notice.endswith("it resets at midnight (Europe/Paris).")
    assert len(fake_mistral.requests) == asked  # refused before any model call
    assert await spent_by(engine, ALICE.id) <= 0.0020 + 1e-9


async def test_twenty_at_once_from_two_processes_overspend_at_most_one_reply(
    make_engine, fake_mistral, tmp_path
):
    db = tmp_path / "shared.db"
    limit = 0.0050
    a = await make_engine(db, user_daily_usd=limit, max_output_tokens=1000)
    b = await make_engine(db, user_daily_usd=limit, max_output_tokens=1000)
    worst_case_usage(fake_mistral)
    one_reply = 1000 * OUT_PRICE
    asks = [
        collect(engine, message(f"q{n}", conv=key(f"C{n}"))) for n, engine in enumerate([a, b] * 10)
    ]
    outcomes = [final(events) for events in await asyncio.gather(*asks)]
    spent = await spent_by(a, ALICE.id)
    assert spent <= limit + one_reply
    assert any(isinstance(o, ReplyFailed) for o in outcomes)
    assert sum(isinstance(o, ReplyDone) for o in outcomes) >= 4


async def test_admins_change_limits_at_run_time_and_it_is_audited(
    make_engine, fake_mistral, tmp_path
):
    db = tmp_path / "limits.db"
    engine = await make_engine(db, admin_ids=frozenset({"A1"}))
    refused = await engine.command(key(), ALICE, "limits", "user U9 1.00", is_group=True)
    assert refused.private and "admin" in refused.text.lower()
    done = await engine.command(key(), ADMIN, "limits", f"user <@{ALICE.id}> 0.0001", is_group=True)
    assert "set to $0.00" in done.text
    shown = await engine.command(key(), ALICE, "limits", "", is_group=True)
    assert shown.private and "You, today" in shown.text
    bad = await engine.command(key(), ADMIN, "limits", "user U9 -5", is_group=True)
    assert bad.text.startswith("Use `limits`")
    await engine.aclose()
    # After a restart the override still holds, and the spend still counts.
    again = await make_engine(db, admin_ids=frozenset({"A1"}))
    failed = final(await collect(again, message("hello")))
    assert isinstance(failed, ReplyFailed) and "daily limit" in failed.notice
    usage = await again.command(key(), ALICE, "usage", "", is_group=True)
    assert "Left: you, today, $0.00 of $0.00" in usage.text
    entries = await again.store.audit_entries()
    assert [(e.actor, e.action) for e in entries] == [("A1", "limits")]
    assert f"user:test:{ALICE.id}:day = 0.00" in entries[0].detail


async def test_admins_are_limited_unless_admins_unlimited(make_engine, fake_mistral):
    worst_case_usage(fake_mistral)
    strict = await make_engine(admin_ids=frozenset({"U1"}), daily_usd=0.0)
    assert isinstance(final(await collect(strict, message("hi"))), ReplyFailed)
    free = await make_engine(admin_ids=frozenset({"U1"}), daily_usd=0.0, admins_unlimited=True)
    assert isinstance(final(await collect(free, message("hi", conv=key("C2")))), ReplyDone)


async def test_on_discord_a_spent_limit_is_one_sentence_and_no_model_call(
    make_engine, fake_mistral, dc
):
    from tests.fakes.discord.fixtures import answer_to
    from tests.fakes.discord.harness import start_adapter

    engine = await make_engine(channel_daily_usd=0.0, timezone="UTC")
    bot = await start_adapter(engine, dc)
    try:
        ask = await dc.user_message(dc.general, dc.alice, "hello?", mention=True)
        text = await answer_to(bot, dc, ask)
        assert text.startswith("This channel has used $0.00 of its $0.00 daily limit")
        assert "resets at midnight (UTC)" in text
        assert fake_mistral.requests == []
    finally:
        await bot.stop()


async def test_on_slack_a_spent_limit_is_one_sentence_in_the_thread(
    make_engine, fake_mistral, fake_slack
):
    from tests.fakes.slack.harness import Harness

    harness = Harness(fake_slack, await make_engine(user_daily_usd=0.0, timezone="UTC"))
    await harness.start()
    try:
        ts = fake_slack.user_message("U1", "C1", "<@UBOT> hello?")
        text = await harness.reply_in("C1", ts)
        assert text.startswith("You have used $0.00 of your $0.00 daily limit")
        assert fake_mistral.requests == []
    finally:
        await harness.stop()
