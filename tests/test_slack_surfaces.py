"""Slack's own surfaces through the real slack-bolt app against the fake Slack: native
streaming in channel threads, the agent view, App Home, the buttons under answers, the
"Ask teambot about this" shortcut and listening channels."""

from __future__ import annotations

import asyncio
import re

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.buttons import FEEDBACK, REGENERATE, STOP
from adapters.slack.settings import DEFAULT_PROMPTS, prompts
from bot.engine import Engine
from bot.errors import ConfigError
from bot.types import ConversationKey
from tests.fakes.mistral import FakeMistral, Reply, text_of
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness

BOT = "<@UBOT>"


def block_types(blocks: list[dict[str, object]]) -> list[object]:
    return [b.get("type") for b in blocks]


def last_request_text(fake_mistral: FakeMistral) -> str:
    return "\n".join(text_of(m["content"]) for m in fake_mistral.requests[-1]["messages"])


# Native streaming in channel threads


async def test_channel_thread_reply_streams_natively_to_the_asker(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.02
    fake_mistral.default_tokens = 80
    ts = slack.fake.user_message("U2", "C1", f"{BOT} stream in the channel")
    text = await slack.reply_in("C1", ts)
    [message] = slack.replies("C1", ts)
    assert message.streamed and not message.streaming and message.recipient == "U2"
    [start] = [c for c in slack.fake.calls if c.method == "chat.startStream"]
    assert start.ok and start.args["recipient_team_id"] == slack.fake.team_id
    assert start.args["thread_ts"] == ts
    assert text.startswith("echo: [Bob]: stream in the channel") and text.endswith("more")
    assert slack.fake.count("chat.update") == 0  # nothing posted and edited
    # The stop carried the finished answer's buttons.
    assert block_types(message.blocks) == ["actions", "context_actions"]
    assert sum(slack.fake.ratelimited.values()) == 0


async def test_fake_slack_requires_a_recipient_for_channel_streams(
    slack: Harness,
) -> None:
    client = AsyncWebClient(token=slack.fake.bot_token, base_url=slack.fake.api_url)
    root = slack.fake.add_user_message("U1", "C1", "hello")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_startStream(
            channel="C1", thread_ts=root, markdown_text="hi", recipient_user_id="U1"
        )
    assert refused.value.response["error"] == "missing_recipient_team_id"


async def test_channel_stream_refused_falls_back_to_posts_and_edits(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.02
    fake_mistral.default_tokens = 80
    slack.fake.fail_next("chat.startStream", error="feature_not_enabled")
    ts = slack.fake.user_message("U1", "C1", f"{BOT} no stream for me")
    text = await slack.reply_in("C1", ts)
    [message] = slack.replies("C1", ts)
    assert not message.streamed
    assert text.startswith("echo: [Alice]: no stream for me") and text.endswith("more")
    assert slack.fake.count("chat.postMessage", ok=True) >= 1
    assert message.blocks[0] == {"type": "markdown", "text": text}


async def test_channel_stream_expiring_midway_is_finished_with_an_edit(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.03
    fake_mistral.default_tokens = 120
    ts = slack.fake.user_message("U1", "C1", f"{BOT} a long one")
    await slack.wait_for(lambda: slack.replies("C1", ts), "the stream")
    slack.fake.expire_streams = True
    text = await slack.reply_in("C1", ts)
    assert text.startswith("echo: [Alice]: a long one") and text.endswith("more")
    assert slack.fake.count("chat.update", ok=True) >= 1


# Agent view


async def test_new_assistant_thread_gets_prompts_then_a_title_and_a_loading_status(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    channel, root = slack.fake.start_assistant_thread("U1")
    await slack.wait_for(lambda: slack.fake.agent.prompts, "suggested prompts")
    [offered] = slack.fake.agent.prompts
    assert offered["channel"] == channel and offered["thread_ts"] == root
    assert [p["message"] for p in offered["prompts"]] == list(DEFAULT_PROMPTS)
    fake_mistral.first_token_delay = 0.3
    ts = slack.fake.user_message("U1", channel, "How do I rotate the API keys?", thread_ts=root)
    await slack.reply_in(channel, root)
    assert slack.fake.agent.titles[(channel, root)] == "How do I rotate the API keys?"
    loading = [messages for key, messages in slack.fake.agent.loading if key == (channel, root)]
    assert loading and len(loading[0]) > 1
    assert "How do I rotate the API keys?" in last_request_text(fake_mistral)
    # A second question in the same thread keeps the first title.
    fake_mistral.first_token_delay = 0.0
    slack.fake.user_message("U1", channel, "And the tokens?", thread_ts=root)
    await slack.wait_for(lambda: len(fake_mistral.requests) == 2, "the second answer")
    await slack.idle()
    assert slack.fake.agent.titles[(channel, root)] == "How do I rotate the API keys?"
    assert ts


async def test_messages_tab_gets_the_configured_prompts_without_a_thread(
    fake_slack: object, make_engine: object
) -> None:
    from tests.fakes.slack.harness import slack_settings

    fake = fake_slack
    engine: Engine = await make_engine()  # type: ignore[operator]
    harness = Harness(fake, engine)  # type: ignore[arg-type]
    import dataclasses

    from adapters.slack import SlackAdapter

    settings = dataclasses.replace(
        slack_settings(fake),  # type: ignore[arg-type]
        prompts=prompts({"TEAMBOT_SLACK_PROMPTS": "What changed today? | Plan my week"}),
    )
    adapter = SlackAdapter(engine, settings, host="127.0.0.1", ping_interval=2)
    run = asyncio.create_task(adapter.run())
    try:
        await harness.wait_for(lambda: adapter.ready.is_set() and fake.hub.connections)  # type: ignore[attr-defined]
        harness.adapter = adapter
        fake.open_home("U3", tab="messages")  # type: ignore[attr-defined]
        await harness.wait_for(lambda: fake.agent.prompts, "prompts")  # type: ignore[attr-defined]
        [offered] = fake.agent.prompts  # type: ignore[attr-defined]
        assert offered["thread_ts"] is None and offered["channel"] == "DU3"
        assert [p["title"] for p in offered["prompts"]] == ["What changed today?", "Plan my week"]
    finally:
        await adapter.close()
        await asyncio.wait_for(run, 10)


def test_prompts_setting_is_checked() -> None:
    assert prompts({}) == DEFAULT_PROMPTS
    for bad in ("|", "a|b|c|d|e", "x" * 151):
        with pytest.raises(ConfigError, match="TEAMBOT_SLACK_PROMPTS"):
            prompts({"TEAMBOT_SLACK_PROMPTS": bad})


async def test_summarize_this_channel_reads_the_channel_being_viewed(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.user_message("U2", "C2", "we moved the launch to thursday")
    slack.fake.user_message("U3", "C1", "lunch is at noon")
    await slack.idle()
    slack.fake.view_channel("U1", "C2")
    await slack.idle()
    dm = slack.fake.app_channel("U1")
    ts = slack.fake.user_message("U1", dm, "Summarize this channel please")
    text = await slack.reply_in(dm, ts)
    summarized = last_request_text(fake_mistral)
    assert "we moved the launch to thursday" in summarized
    assert "lunch is at noon" not in summarized
    assert text  # the summary went to the asker's thread


async def test_a_viewed_channel_the_asker_cannot_read_stays_unread(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.add_channel("G1", "group")  # a private channel the asker is not in
    slack.fake.user_message("U2", "G1", "the secret salary table")
    await slack.idle()
    slack.fake.view_channel("U1", "G1")
    await slack.idle()
    dm = slack.fake.app_channel("U1")
    before = len(fake_mistral.requests)
    ts = slack.fake.user_message("U1", dm, "summarize this channel")
    text = await slack.reply_in(dm, ts)
    assert "Nothing was said" in text
    assert all(
        "salary" not in text_of(m["content"])
        for r in fake_mistral.requests[before:]
        for m in r["messages"]
    )


async def test_other_questions_name_the_viewed_channel(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    channel, root = slack.fake.start_assistant_thread("U1", viewing="C2")
    await slack.idle()
    slack.fake.user_message("U1", channel, "what is being discussed here?", thread_ts=root)
    await slack.reply_in(channel, root)
    assert '"this channel" means #c2' in last_request_text(fake_mistral)


# App Home


async def test_home_tab_shows_commands_and_the_viewers_usage(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    ts = slack.fake.user_message("U1", "C1", f"{BOT} cost me something")
    await slack.reply_in("C1", ts)
    slack.fake.open_home("U1")
    await slack.wait_for(lambda: slack.fake.views, "views.publish")
    [home] = slack.fake.views
    assert home.kind == "home" and home.user == "U1"
    text = "\n".join(str(b.get("text", {})) for b in home.view["blocks"])
    assert "/ask" in text and "/usage" in text and "/summarize" in text
    spent = re.search(r"This month: \*\$([0-9.]+)\* for 1 model calls \((\d+) tokens in", text)
    assert spent and float(spent.group(1)) > 0 and int(spent.group(2)) > 0, text
    slack.fake.open_home("U2")  # someone who never asked
    await slack.wait_for(lambda: len(slack.fake.views) == 2, "a second publish")
    text = "\n".join(str(b.get("text", {})) for b in slack.fake.views[1].view["blocks"])
    assert "for 0 model calls" in text


# Buttons


async def test_feedback_click_is_stored_and_acknowledged_privately(
    slack: Harness, fake_mistral: FakeMistral, engine: Engine
) -> None:
    ts = slack.fake.user_message("U1", "C1", f"{BOT} rate me")
    await slack.reply_in("C1", ts)
    [answer] = slack.replies("C1", ts)
    slack.fake.click("U2", "C1", answer.ts, FEEDBACK, "down")
    await slack.wait_for(lambda: slack.fake.ephemerals, "the private thanks")
    assert slack.fake.ephemerals[-1]["user"] == "U2" and "👎" in slack.fake.ephemerals[-1]["text"]
    report = await engine.store.feedback_report(since=0)
    assert [(up, down) for _, up, down in report.days] == [(0, 1)]
    slack.fake.click("U2", "C1", answer.ts, FEEDBACK, "up")  # the toggle changes the vote
    await slack.wait_for(lambda: len(slack.fake.ephemerals) == 2, "the second note")
    report = await engine.store.feedback_report(since=0)
    assert [(up, down) for _, up, down in report.days] == [(1, 0)]


async def test_stop_cancels_the_model_and_keeps_the_text(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.streaming_enabled = False  # the posted message carries the Stop button
    fake_mistral.token_interval = 0.05
    fake_mistral.default_tokens = 400  # 20 s if nobody stops it
    ts = slack.fake.user_message("U1", "C1", f"{BOT} talk for a long time")

    def stoppable() -> bool:
        found = slack.replies("C1", ts)
        return bool(found) and "actions" in block_types(found[0].blocks)

    await slack.wait_for(stoppable, "a Stop button")
    [message] = slack.replies("C1", ts)
    slack.fake.click("U1", "C1", message.ts, STOP)
    await slack.wait_for(lambda: "Stopped by Alice" in message.visible, "the stopped answer")
    await slack.idle()
    index = len(fake_mistral.last_token_times) - 1
    sent = fake_mistral.last_token_times[index]
    await asyncio.sleep(0.5)
    assert fake_mistral.last_token_times[index] == sent  # the fake sends nothing more
    words = message.visible.split()
    assert 3 < len(words) < 400 and message.visible.startswith("echo: [Alice]:")
    assert block_types(message.blocks)[-2:] == ["actions", "context_actions"]  # now Regenerate
    assert any("Stopped" in e["text"] for e in slack.fake.ephemerals)


async def test_slacks_own_stop_of_a_stream_stops_the_model(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.05
    fake_mistral.default_tokens = 400
    ts = slack.fake.user_message("U1", "D1", "a long stream please")
    await slack.wait_for(
        lambda: slack.fake.count("chat.appendStream", ok=True) >= 1, "the stream growing"
    )
    [message] = slack.replies("D1", ts)
    slack.fake.stop_stream_as_user("D1", message.ts)
    await slack.wait_for(lambda: "Stopped by Alice" in message.visible, "the stopped answer")
    await slack.idle()
    assert slack.fake.count("chat.appendStream", ok=False) >= 1
    assert message.visible.startswith("echo: a long stream please")
    assert len(message.visible.split()) < 400


async def test_stop_by_someone_else_is_refused_privately(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.streaming_enabled = False
    fake_mistral.token_interval = 0.05
    fake_mistral.default_tokens = 120
    ts = slack.fake.user_message("U1", "C1", f"{BOT} mine")
    await slack.wait_for(lambda: slack.replies("C1", ts), "the answer")
    [message] = slack.replies("C1", ts)
    slack.fake.click("U3", "C1", message.ts, STOP)
    text = await slack.reply_in("C1", ts)
    assert text.endswith("more") and "Stopped" not in text
    assert any(e["user"] == "U3" and "Only Alice" in e["text"] for e in slack.fake.ephemerals)


async def test_regenerate_replaces_the_answer_in_place(
    slack: Harness, fake_mistral: FakeMistral, engine: Engine
) -> None:
    fake_mistral.enqueue(Reply("The first answer."), Reply("A better answer."))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} answer twice")
    await slack.reply_in("C1", ts)
    [message] = slack.replies("C1", ts)
    assert message.visible == "The first answer."
    slack.fake.click("U2", "C1", message.ts, REGENERATE)  # not the asker: refused
    await slack.wait_for(lambda: slack.fake.ephemerals, "the refusal")
    assert "Only Alice" in slack.fake.ephemerals[-1]["text"]
    slack.fake.click("U1", "C1", message.ts, REGENERATE)
    await slack.wait_for(lambda: "A better answer." in message.visible, "the new answer")
    await slack.idle()
    assert [m.ts for m in slack.replies("C1", ts)] == [message.ts]  # in place
    assert len(fake_mistral.requests) == 2
    thread = ConversationKey("slack", slack.fake.team_id, "C1", ts)
    _, window = await engine.store.window(str(thread))
    assert [m.text for m in window if m.role == "assistant"] == ["A better answer."]


# The message shortcut


async def test_ask_about_message_opens_a_modal_and_answers_in_its_thread(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    target = slack.fake.add_user_message("U2", "C1", "deploy failed with error 42")
    slack.fake.message_shortcut("ask_about_message", "U1", "C1", target)
    await slack.wait_for(lambda: slack.fake.views, "the modal")
    [modal] = slack.fake.views
    assert modal.kind == "modal" and modal.user == "U1"
    slack.fake.submit(modal.id, {"question": {"text": "What does error 42 mean?"}})
    text = await slack.reply_in("C1", target)
    assert "**Alice** asked about this message: What does error 42 mean?" in text
    asked = text_of(fake_mistral.requests[-1]["messages"][-1]["content"])
    assert "What does error 42 mean?" in asked and "deploy failed with error 42" in asked
    assert "by Bob" in asked


# Listening channels


async def test_listening_channel_answers_every_message_in_its_thread(
    slack: Harness, fake_mistral: FakeMistral, engine: Engine
) -> None:
    await engine.set_setting(ConversationKey("slack", slack.fake.team_id, "C1"), "listen", "on")
    ts = slack.fake.user_message("U1", "C1", "no mention needed here")
    text = await slack.reply_in("C1", ts)
    assert text.startswith("echo: [Alice]: no mention needed here")
    other = slack.fake.user_message("U1", "C2", "but not here")
    await slack.idle()
    assert not slack.replies("C2", other) and len(fake_mistral.requests) == 1
