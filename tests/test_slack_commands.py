"""Slash commands, reasoning and files."""

from __future__ import annotations

import base64
import re
from typing import Any

from tests.conftest import EngineFactory
from tests.fakes.mistral import FakeMistral, Reply, text_of
from tests.fakes.slack import FakeSlack
from tests.fakes.slack.fixtures import (  # noqa: F401
    fake_slack_fixture,
    slack_fixture,
    slack_http_fixture,
)
from tests.fakes.slack.harness import Harness
from tests.fixtures import media

BOT = "<@UBOT>"
PNG = media.png()  # a real image: images are decoded before they are sent


async def command(
    harness: Harness, name: str, text: str = "", user: str = "U1", channel: str = "C1"
) -> dict[str, Any]:
    before = len(harness.fake.responses)
    harness.fake.slash_command(name, text, user, channel)
    await harness.wait_for(lambda: len(harness.fake.responses) > before, f"{name} response")
    return harness.fake.responses[before]


async def test_help_and_usage_are_private_and_acked(slack: Harness) -> None:
    help_reply = await command(slack, "/help")
    assert help_reply["response_type"] == "ephemeral"
    assert "teambot" in help_reply["text"]
    assert help_reply["blocks"][0]["type"] == "markdown"
    usage = await command(slack, "/usage")
    assert usage["response_type"] == "ephemeral"
    command_envelopes = [d for d in slack.fake.hub.deliveries if d.kind == "slash_commands"]
    assert len(command_envelopes) == 2
    assert all(d.acked and d.attempt == 0 for d in command_envelopes)


async def test_system_in_a_channel_is_for_admins_and_new_threads_follow_it(
    fake_slack: FakeSlack, make_engine: EngineFactory, fake_mistral: FakeMistral
) -> None:
    harness = Harness(fake_slack, await make_engine(admin_ids=frozenset({"U1"})))
    await harness.start()
    try:
        refused = await command(harness, "/system", "talk like a pirate", user="U2")
        assert "only admins" in refused["text"].lower()
        accepted = await command(harness, "/system", "talk like a pirate", user="U1")
        assert accepted["text"] == "Instructions set for this conversation."
        ts = fake_slack.user_message("U2", "C1", f"{BOT} hello")
        await harness.reply_in("C1", ts)
        system = fake_mistral.requests[-1]["messages"][0]
        assert "pirate" in text_of(system["content"])
    finally:
        await harness.stop()


async def test_reset_forgets_the_dm(slack: Harness, fake_mistral: FakeMistral) -> None:
    ts = slack.fake.user_message("U1", "D1", "remember kumquat")
    await slack.reply_in("D1", ts)
    reset = await command(slack, "/reset", channel="D1")
    assert "Forgot" in reset["text"]
    ts = slack.fake.user_message("U1", "D1", "what fruit?")
    await slack.reply_in("D1", ts)
    seen = " ".join(text_of(m["content"]) for m in fake_mistral.requests[-1]["messages"])
    assert "kumquat" not in seen


async def test_reasoning_default_and_shown_thinking(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    await command(slack, "/reasoning", "show", channel="D1")
    fake_mistral.enqueue(Reply("The answer is 42.", thinking="step one, step two"))
    ts = slack.fake.user_message("U1", "D1", "deep question")
    text = await slack.reply_in("D1", ts)
    assert fake_mistral.requests[-1]["reasoning_effort"] == "high"
    assert text.startswith("The answer is 42.")
    assert "> step one, step two" in text and "Thinking" in text


async def test_think_prefix_reasons_but_keeps_thinking_private(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("Carefully: yes.", thinking="secret chain of thought"))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} think: is it prime?")
    text = await slack.reply_in("C1", ts)
    request = fake_mistral.requests[-1]
    assert request["reasoning_effort"] == "high"
    assert "think:" not in text_of(request["messages"][-1]["content"])
    assert text == "Carefully: yes."


async def test_ask_posts_the_question_and_answers_in_its_thread(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.user_message("U2", "C2", "context: the office is in Lyon")
    await slack.idle()
    slack.fake.slash_command("/ask", "where is the office? &lt;asks <@U2>&gt;", "U1", "C2")
    await slack.wait_for(lambda: slack.fake.bot_messages("C2", None), "the posted question")
    [question] = slack.fake.bot_messages("C2", None)
    assert question.visible == "**Alice** asked: where is the office? <asks @Bob>"
    text = await slack.reply_in("C2", question.ts)
    assert text.startswith("echo: ") and text.endswith("[Alice]: where is the office? <asks @Bob>")
    seen = " ".join(text_of(m["content"]) for m in fake_mistral.requests[-1]["messages"])
    assert "Lyon" in seen


async def test_commands_over_http(slack_http: Harness) -> None:
    reply = await command(slack_http, "/help")
    assert reply["response_type"] == "ephemeral" and "teambot" in reply["text"]
    assert all(d.acked for d in slack_http.fake.http_deliveries)


async def test_images_reach_the_model_with_the_bot_token(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    image = slack.fake.add_file("cat.png", "image/png", PNG)
    ts = slack.fake.user_message("U1", "D1", "what is this?", files=[image])
    await slack.reply_in("D1", ts)
    content = fake_mistral.requests[-1]["messages"][-1]["content"]
    urls = [p["image_url"] for p in content if p.get("type") == "image_url"]
    assert urls == ["data:image/png;base64," + base64.b64encode(PNG).decode()]


async def test_login_page_instead_of_image_is_reported(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    image = slack.fake.add_file("secret.png", "image/png", PNG, login_page=True)
    ts = slack.fake.user_message("U1", "C1", f"{BOT} see this", files=[image])
    text = await slack.reply_in("C1", ts)
    [note, answer] = [m.visible for m in slack.replies("C1", ts)]
    assert "secret.png" in note and "login page" in note
    assert answer.startswith("echo:")
    content = fake_mistral.requests[-1]["messages"][-1]["content"]
    assert isinstance(content, str) or all(p.get("type") != "image_url" for p in content)
    assert "login page" in text


async def test_text_files_inlined_and_too_many_images_noted(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    notes = slack.fake.add_file("notes.txt", "text/plain", b"the launch code is tulip")
    images = [slack.fake.add_file(f"i{i}.png", "image/png", PNG) for i in range(9)]
    ts = slack.fake.user_message("U1", "D1", "summarise", files=[notes, *images])
    await slack.reply_in("D1", ts)
    content = fake_mistral.requests[-1]["messages"][-1]["content"]
    assert "the launch code is tulip" in text_of(content)
    assert sum(1 for p in content if p.get("type") == "image_url") == 8
    assert "i8.png" in slack.replies("D1", ts)[0].visible


def test_manifest_declares_what_the_adapter_handles() -> None:
    from pathlib import Path

    from adapters.slack.slash import COMMANDS

    manifest = (Path(__file__).parent.parent / "slack-manifest.yml").read_text()
    declared = re.findall(r"^\s+- command: (/\w+)$", manifest, re.MULTILINE)
    assert sorted(declared) == sorted(COMMANDS)
    events = re.findall(r"^\s+- (app_mention|message\.\w+)$", manifest, re.MULTILINE)
    assert events == [
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "message.mpim",
    ]
    scopes = set(re.findall(r"^\s+- ([a-z_]+:[a-z_]+|commands)\s", manifest, re.MULTILINE))
    assert {
        "app_mentions:read",
        "chat:write",
        "files:read",
        "users:read",
        "commands",
        "im:history",
        "channels:history",
        "reactions:write",
    } <= scopes
    assert "socket_mode_enabled: true" in manifest


async def test_bot_token_goes_only_to_slack_hosts(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    image = slack.fake.add_file("elsewhere.png", "image/png", PNG)
    image["url_private"] = image["url_private_download"] = "http://localhost:9/steal.png"
    ts = slack.fake.user_message("U1", "D1", "look", files=[image])
    await slack.reply_in("D1", ts)
    note = slack.replies("D1", ts)[0].visible
    assert "Couldn't download elsewhere.png" in note


async def test_slack_connect_file_stubs_are_looked_up(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    image = slack.fake.add_file("shared.png", "image/png", PNG)
    stub = {"id": image["id"], "file_access": "check_file_info"}
    ts = slack.fake.user_message("U1", "D1", "from another org", files=[stub])
    await slack.reply_in("D1", ts)
    content = fake_mistral.requests[-1]["messages"][-1]["content"]
    assert any(p.get("type") == "image_url" for p in content)
    assert slack.fake.count("files.info", ok=True) == 1


async def test_summarize_in_a_channel_and_privately(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    ts = slack.fake.user_message("U2", "C1", "the api is slow since noon")
    await slack.idle()
    fake_mistral.enqueue(Reply("**Topics**\n- API latency [1]."))
    shown = await command(slack, "/summarize", "1d")
    assert shown["response_type"] == "in_channel"
    link = f"https://fake.slack.test/archives/C1/p{ts.replace('.', '')}"
    assert f"[1]({link})" in shown["text"]
    assert "in the last day" not in shown["text"] and "1 message" in shown["text"]
    private = await command(slack, "/summarize", "30m private", channel="C2")
    assert private["response_type"] == "ephemeral"
    assert private["text"] == "Nothing was said here over the last 30 minutes."
