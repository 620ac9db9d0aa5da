"""Who gets answered where, with which context, exactly once (Socket Mode)."""

from __future__ import annotations

from bot.types import ConversationKey
from tests.fakes.mistral import FakeMistral, text_of
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness

BOT = "<@UBOT>"


def prompt(fake: FakeMistral, index: int = -1) -> str:
    """Everything the model was shown in one request, as one string."""
    return "\n".join(
        f"{m['role']}: {text_of(m['content'])}" for m in fake.requests[index]["messages"]
    )


async def test_mention_answered_in_its_thread_once(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    ts = slack.fake.user_message("U1", "C1", f"{BOT} what is the capital of France?")
    text = await slack.reply_in("C1", ts)
    assert text == "echo: [Alice]: what is the capital of France?"
    assert len(fake_mistral.requests) == 1  # app_mention + message: one answer
    assert slack.fake.bot_messages("C1", None) == []  # nothing top-level
    mention_events = [d for d in slack.fake.hub.deliveries if d.payload["event"]["ts"] == ts]
    assert {d.payload["event"]["type"] for d in mention_events} == {"app_mention", "message"}


async def test_mention_events_in_either_order_answered_once(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    ts = slack.fake.user_message("U1", "C1", f"hey {BOT} ping", mention_first=False)
    await slack.reply_in("C1", ts)
    assert len(fake_mistral.requests) == 1
    assert len(slack.replies("C1", ts)) == 1


async def test_thread_follow_up_answered_without_mention(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    ts = slack.fake.user_message("U1", "C1", f"{BOT} remember the word banana")
    await slack.reply_in("C1", ts)
    slack.fake.user_message("U2", "C1", "and what was the word?", thread_ts=ts)
    await slack.wait_for(lambda: len(slack.replies("C1", ts)) == 2, "second answer")
    await slack.idle()
    seen = prompt(fake_mistral)
    assert "[Alice]: remember the word banana" in seen
    assert "[Bob]: and what was the word?" in seen
    assert "assistant: echo:" in seen


async def test_unengaged_thread_is_context_not_answered(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    root = slack.fake.user_message("U1", "C1", "lunch plans?")
    slack.fake.user_message("U2", "C1", "pizza at noon", thread_ts=root)
    await slack.idle()
    assert fake_mistral.requests == []
    assert slack.fake.bot_messages("C1", root) == []
    # Mentioned inside that thread later: the thread's earlier replies are the context.
    slack.fake.user_message("U3", "C1", f"{BOT} where are we eating?", thread_ts=root)
    await slack.wait_for(lambda: slack.replies("C1", root), "answer in the thread")
    await slack.idle()
    assert "[Bob]: pizza at noon" in prompt(fake_mistral)


async def test_top_level_mention_seeded_with_channel_but_not_other_threads(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake = slack.fake
    fake.user_message("U1", "C1", "the deploy is on Friday")
    other = fake.user_message("U2", "C1", f"{BOT} secret thread: the code is 4711")
    await slack.reply_in("C1", other)
    fake.user_message("U2", "C1", "thread-only reply xyzzy", thread_ts=other)
    fake.user_message("U3", "C1", "top-level chatter &lt;b&gt; &amp; more")
    await slack.idle()
    ts = fake.user_message("U1", "C1", f"{BOT} when is the deploy?")
    await slack.reply_in("C1", ts)
    seen = prompt(fake_mistral)
    assert "[Alice]: the deploy is on Friday" in seen
    assert "[Carol]: top-level chatter <b> & more" in seen
    assert "xyzzy" not in seen  # another thread's reply
    assert "echo: [Bob]" not in seen  # another thread's answer
    assert "[Alice]: when is the deploy?" in seen
    assert seen.count("when is the deploy?") == 1


async def test_other_users_mentions_become_names(slack: Harness, fake_mistral: FakeMistral) -> None:
    ts = slack.fake.user_message("U1", "C1", f"{BOT} say hi to <@U2> and <@U3>")
    text = await slack.reply_in("C1", ts)
    assert "say hi to @Bob and @Carol" in prompt(fake_mistral)
    assert "<@" not in text and not slack.fake.pings
    assert slack.fake.count("users.info") == 3  # Alice, Bob, Carol once each
    slack.fake.user_message("U2", "C1", "again <@U3>", thread_ts=ts)
    await slack.wait_for(lambda: len(slack.replies("C1", ts)) == 2, "second answer")
    await slack.idle()
    assert slack.fake.count("users.info") == 3  # cached


async def test_every_dm_answered_and_dm_is_one_conversation(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    first = slack.fake.user_message("U1", "D1", "my name is Zed")
    await slack.reply_in("D1", first)
    second = slack.fake.user_message("U1", "D1", "what is my name?")
    text = await slack.reply_in("D1", second)
    assert text == "echo: what is my name?"  # one-to-one: no speaker prefix
    seen = prompt(fake_mistral)
    assert "user: my name is Zed" in seen and "assistant: echo: my name is Zed" in seen
    assert slack.fake.count("chat.startStream") == 2  # native streaming in DMs


async def test_two_threads_in_parallel_never_mix(slack: Harness, fake_mistral: FakeMistral) -> None:
    fake_mistral.token_interval = 0.01
    a = slack.fake.user_message("U1", "C1", f"{BOT} alpha topic one")
    b = slack.fake.user_message("U2", "C2", f"{BOT} bravo topic two")
    await slack.reply_in("C1", a)
    await slack.reply_in("C2", b)
    slack.fake.user_message("U1", "C1", "alpha follow-up", thread_ts=a)
    slack.fake.user_message("U2", "C2", "bravo follow-up", thread_ts=b)
    await slack.wait_for(
        lambda: len(slack.replies("C1", a)) == 2 and len(slack.replies("C2", b)) == 2, "answers"
    )
    await slack.idle()
    for request in fake_mistral.requests:
        seen = " ".join(text_of(m["content"]) for m in request["messages"])
        assert not ("alpha" in seen and "bravo" in seen), seen
    assert "bravo" not in slack.fake.thread_text("C1", a)
    assert "alpha" not in slack.fake.thread_text("C2", b)


async def test_bot_messages_are_not_answered(slack: Harness, fake_mistral: FakeMistral) -> None:
    ts = slack.fake.user_message("U1", "C1", f"{BOT} hello")
    await slack.reply_in("C1", ts)
    # The fake echoes the bot's own posts and edits back as events, as Slack does.
    assert any(
        d.payload["event"].get("bot_id") == "BBOT"
        or d.payload["event"].get("subtype") == "message_changed"
        for d in slack.fake.hub.deliveries
    )
    assert len(fake_mistral.requests) == 1


async def test_edits_and_deletes_reach_the_context(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake = slack.fake
    typo = fake.user_message("U1", "C1", "the meeting is at 3pm")
    gone = fake.user_message("U2", "C1", "ignore this rumour")
    await slack.idle()
    fake.edit_user_message("C1", typo, "the meeting is at 4pm")
    fake.delete_user_message("C1", gone)
    await slack.idle()
    ts = fake.user_message("U3", "C1", f"{BOT} when is the meeting?")
    await slack.reply_in("C1", ts)
    seen = prompt(fake_mistral)
    assert "4pm" in seen and "3pm" not in seen
    assert "rumour" not in seen


async def test_redelivered_event_answered_once(slack: Harness, fake_mistral: FakeMistral) -> None:
    fake = slack.fake
    ts = fake.add_user_message("U1", "C1", f"{BOT} once")
    event = {
        "type": "app_mention",
        "channel": "C1",
        "user": "U1",
        "text": f"{BOT} once",
        "ts": ts,
        "event_ts": ts,
        "team": fake.team_id,
    }
    fake.deliver_event(event, "EvSAME")
    fake.deliver_event(event, "EvSAME")  # Slack's retry of the same event
    fake.deliver_event(dict(event, type="message", channel_type="channel"), "EvOTHER")
    await slack.reply_in("C1", ts)
    assert len(fake_mistral.requests) == 1
    assert len(slack.replies("C1", ts)) == 1


async def test_bare_mention_still_gets_an_answer(slack: Harness, fake_mistral: FakeMistral) -> None:
    ts = slack.fake.user_message("U1", "C1", BOT)
    text = await slack.reply_in("C1", ts)
    assert text  # the engine turns an empty question into something answerable
    assert len(slack.replies("C1", ts)) == 1


async def test_other_bots_are_context_but_never_answered(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake = slack.fake
    ts = fake.add_user_message("B2", "C1", f"{BOT} build 42 failed")
    event = {
        "type": "message",
        "subtype": "bot_message",
        "channel": "C1",
        "bot_id": "B2",
        "username": "ci",
        "text": f"{BOT} build 42 failed",
        "ts": ts,
        "event_ts": ts,
        "team": fake.team_id,
        "channel_type": "channel",
    }
    fake.deliver_event(event)
    fake.deliver_event(dict(event, type="app_mention"))
    await slack.idle()
    assert fake_mistral.requests == [] and fake.bot_messages("C1", ts) == []
    asked = fake.user_message("U1", "C1", f"{BOT} why did the build fail?")
    await slack.reply_in("C1", asked)
    assert "[ci]: build 42 failed" in prompt(fake_mistral)


async def test_a_broken_database_still_gets_a_short_apology(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    await slack.engine.store.aclose()  # every store call fails from here on
    ts = slack.fake.user_message("U1", "C1", f"{BOT} are you there?")
    text = await slack.reply_in("C1", ts)
    assert text == "Sorry, something went wrong while answering; the details are in the bot's log."
    assert fake_mistral.requests == []


async def test_a_question_answered_before_gets_no_reply_and_no_status(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake = slack.fake
    ts = fake.add_user_message("U1", "C1", f"{BOT} asked before a restart")
    # The answer was claimed before (by another process, or before a restart).
    thread = ConversationKey("slack", fake.team_id, "C1", ts)
    assert await slack.engine.store.claim_event(f"answer:{thread}:{ts}")
    event = {
        "type": "app_mention",
        "channel": "C1",
        "user": "U1",
        "text": f"{BOT} asked before a restart",
        "ts": ts,
        "event_ts": ts,
        "team": fake.team_id,
    }
    fake.deliver_event(event, "EvNEW")
    await slack.idle()
    assert fake_mistral.requests == [] and slack.replies("C1", ts) == []
    # No "is thinking…" was shown, so there is nothing to clear either.
    assert [s for _, key, s in fake.statuses if key == ("C1", ts)] == []
