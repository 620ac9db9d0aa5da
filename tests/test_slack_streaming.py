"""What people see while and after the bot writes: pacing, splitting, limits, safety."""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from adapters.slack import delivery
from tests.fakes.mistral import Disconnect, Error, FakeMistral, Reply, error_body
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness

BOT = "<@UBOT>"


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


async def test_first_tokens_posted_then_edits_at_most_once_a_second(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.first_token_delay = 0.1
    fake_mistral.token_interval = 0.02
    fake_mistral.default_tokens = 110  # about 2 s of streaming
    ts = slack.fake.user_message("U1", "C1", f"{BOT} stream please")
    text = await slack.reply_in("C1", ts)
    [message] = slack.replies("C1", ts)
    first_token, last_token = fake_mistral.first_token_times[-1], fake_mistral.last_token_times[-1]
    assert first_token <= message.created < last_token - 1.0  # visible long before the end
    times = [message.created] + [t for t, _ in message.updates]
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]  # the final may come sooner
    assert gaps and min(gaps) >= 0.95, gaps  # interim edits at most once a second
    assert len(message.updates) >= 2  # it really streamed
    assert text.startswith("echo: [Alice]: stream please") and text.endswith("more")
    assert text == message.updates[-1][1]
    # The status showed before any text did.
    status_times = [t for t, key, s in slack.fake.statuses if key == ("C1", ts) and s]
    assert status_times and status_times[0] < message.created


async def test_markdown_rendered_with_text_fallback(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.streaming_enabled = False  # posted messages (streams carry markdown_text)
    answer = "# Title\n\n**bold** and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    fake_mistral.enqueue(Reply(answer))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} format")
    await slack.reply_in("C1", ts)
    [message] = slack.replies("C1", ts)
    assert message.blocks[0] == {"type": "markdown", "text": answer}
    assert [b["type"] for b in message.blocks[1:]] == ["actions", "context_actions"]  # buttons
    assert message.text == answer  # notification fallback


async def test_long_answer_continues_in_new_messages_with_fences_reopened(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    code = "\n".join(f"    print('line {i}')" for i in range(300))
    answer = f"{words(400)}\n\n```python\ndef f():\n{code}\n```\n\n{words(300, 'z')}"
    fake_mistral.enqueue(Reply(answer))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} long one")
    await slack.reply_in("C1", ts)
    messages = [m.visible for m in slack.replies("C1", ts)]
    assert len(messages) >= 3
    assert all(len(m) <= 4000 for m in messages)
    for m in messages:
        assert m.count("```") % 2 == 0, m[:80]  # every message renders its code on its own
    assert any(m.startswith("```python") for m in messages[1:])
    joined = "\n".join(messages)
    assert all(f"line {i}'" in joined for i in range(300))
    assert "w0 " in joined and "z299" in joined
    assert not slack.fake.errors()


async def test_msg_too_long_continues_in_a_new_message(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.max_update_chars = 1500  # this workspace refuses edits earlier than usual
    slack.fake.streaming_enabled = False  # posts and edits
    fake_mistral.token_interval = 0.005
    answer = words(600)  # ~3.8k characters
    fake_mistral.enqueue(Reply(answer))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} long")
    await slack.reply_in("C1", ts)
    messages = [m.visible for m in slack.replies("C1", ts)]
    assert len(messages) >= 3
    assert " ".join(messages).split() == answer.split()
    assert any(c.error == "msg_too_long" for c in slack.fake.errors())


async def test_ratelimited_calls_are_retried_and_the_answer_lands(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.01
    fake_mistral.default_tokens = 60
    slack.fake.streaming_enabled = False  # posts and edits
    slack.fake.fail_next("chat.postMessage", retry_after=1)
    slack.fake.fail_next("chat.update", retry_after=1)
    ts = slack.fake.user_message("U1", "C1", f"{BOT} despite limits")
    await slack.wait_for(lambda: slack.fake.ratelimited["chat.update"] == 1, "the update's 429", 10)
    text = await slack.reply_in("C1", ts)
    assert slack.fake.ratelimited["chat.postMessage"] == 1
    assert text.startswith("echo: [Alice]: despite limits") and text.endswith("more")
    assert len(slack.replies("C1", ts)) == 1


async def test_parallel_replies_share_the_update_budget_without_refusals(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.first_token_delay = 0.1
    fake_mistral.token_interval = 0.02
    fake_mistral.default_tokens = 60
    threads = []
    for i in range(14):
        channel = f"CP{i}"
        slack.fake.add_channel(channel)
        threads.append((channel, slack.fake.user_message("U1", channel, f"{BOT} job {i}")))
    await slack.wait_for(
        lambda: all(slack.replies(c, t) for c, t in threads), "every thread answered", 30
    )
    await slack.idle(30)
    for i, (channel, ts) in enumerate(threads):
        text = slack.fake.thread_text(channel, ts)
        assert text.startswith(f"echo: [Alice]: job {i}") and text.endswith("more"), text
    assert sum(slack.fake.ratelimited.values()) == 0


async def test_dm_uses_native_streaming(slack: Harness, fake_mistral: FakeMistral) -> None:
    fake_mistral.first_token_delay = 0.05
    fake_mistral.token_interval = 0.02
    fake_mistral.default_tokens = 100
    ts = slack.fake.user_message("U1", "D1", "stream to me")
    text = await slack.reply_in("D1", ts)
    [message] = slack.replies("D1", ts)
    assert message.streamed and not message.streaming
    assert slack.fake.count("chat.appendStream", ok=True) >= 1
    assert slack.fake.count("chat.update") == 0
    assert text.startswith("echo: stream to me") and text.endswith("more")


async def test_streaming_refused_falls_back_to_edits(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    slack.fake.streaming_enabled = False
    fake_mistral.token_interval = 0.02
    fake_mistral.default_tokens = 80
    ts = slack.fake.user_message("U1", "D1", "no streaming here")
    text = await slack.reply_in("D1", ts)
    assert text.startswith("echo: no streaming here") and text.endswith("more")
    assert slack.fake.count("chat.startStream", ok=False) >= 1
    assert slack.fake.count("chat.update", ok=True) >= 1


async def test_expired_stream_finished_with_an_edit(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.02
    fake_mistral.default_tokens = 120
    ts = slack.fake.user_message("U1", "D1", "expire me")
    await slack.wait_for(lambda: slack.fake.count("chat.startStream", ok=True), "stream start")
    slack.fake.expire_streams = True
    text = await slack.reply_in("D1", ts)
    [message] = slack.replies("D1", ts)
    assert any(c.error == "message_not_in_streaming_state" for c in slack.fake.errors())
    assert text.startswith("echo: expire me") and text.endswith("more")
    assert message.updates[-1][1] == text


async def test_model_output_never_pings(slack: Harness, fake_mistral: FakeMistral) -> None:
    nasty = (
        "Hey <!channel> and <!here|here> and <!everyone>, also @channel @here @everyone, "
        "<@U1> <@W2|bob> and <!subteam^S123|@devs> — done."
    )
    fake_mistral.enqueue(Reply(nasty), Reply(nasty))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} ping everyone")
    channel_text = await slack.reply_in("C1", ts)
    dm = slack.fake.user_message("U1", "D1", "ping everyone")
    dm_text = await slack.reply_in("D1", dm)
    assert slack.fake.pings == []
    for text in (channel_text, dm_text):
        assert "channel" in text and "everyone" in text  # still readable
        assert re.sub("\u200b", "", text) == nasty


async def test_status_falls_back_to_a_reaction(slack: Harness, fake_mistral: FakeMistral) -> None:
    slack.fake.status_enabled = False
    ts = slack.fake.user_message("U1", "C1", f"{BOT} react")
    await slack.reply_in("C1", ts)
    log = [(key, name, added) for _, key, name, added in slack.fake.reaction_log]
    assert log == [(("C1", ts), "eyes", True), (("C1", ts), "eyes", False)]


async def test_model_error_is_one_short_sentence(slack: Harness, fake_mistral: FakeMistral) -> None:
    fake_mistral.enqueue(Error(401, error_body("Unauthorized", "invalid_api_key")))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} fail please")
    text = await slack.reply_in("C1", ts)
    assert len(slack.replies("C1", ts)) == 1
    assert text.count(".") == 1 and "Traceback" not in text and len(text) < 120


async def test_cut_off_answer_keeps_text_and_says_so(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Disconnect(after_text="half an answer"))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} break")
    text = await slack.reply_in("C1", ts)
    assert text.startswith("half an answer")
    assert "cut off" in text


async def test_slow_model_keeps_the_status_until_text(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.first_token_delay = 0.8
    ts = slack.fake.user_message("U1", "C1", f"{BOT} slow")
    await slack.wait_for(lambda: slack.fake.status.get(("C1", ts)), "status shown")
    await asyncio.sleep(0.3)
    assert slack.replies("C1", ts) == []
    await slack.reply_in("C1", ts)
    assert slack.fake.status[("C1", ts)] == ""  # the reply cleared it


async def test_status_is_renewed_while_the_model_is_slow(
    slack: Harness, fake_mistral: FakeMistral, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slack drops a status after two minutes; the writer renews it (every 0.2 s here).
    monkeypatch.setattr(delivery, "STATUS_RENEW", 0.2)
    fake_mistral.first_token_delay = 1.0
    ts = slack.fake.user_message("U1", "C1", f"{BOT} very slow")
    await slack.reply_in("C1", ts)
    [message] = slack.replies("C1", ts)
    shown = [t for t, key, s in slack.fake.statuses if key == ("C1", ts) and s]
    assert len(shown) >= 4, shown  # ~1 s of waiting at one renewal per 0.2 s
    assert all(t < message.created for t in shown)  # none after text showed
    assert slack.fake.status[("C1", ts)] == ""


async def test_long_dm_answer_leaves_the_stream_and_continues(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    fake_mistral.token_interval = 0.002
    answer = words(1100)  # ~7k characters: more than one message
    fake_mistral.enqueue(Reply(answer))
    ts = slack.fake.user_message("U1", "D1", "tell me everything")
    await slack.reply_in("D1", ts)
    messages = slack.replies("D1", ts)
    assert len(messages) >= 2 and messages[0].streamed
    assert not any(m.streaming for m in messages)  # no stream left stuck
    assert all(len(m.visible) <= 4000 for m in messages)
    assert " ".join(m.visible for m in messages).split() == answer.split()
