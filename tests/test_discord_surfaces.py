"""Discord's own surfaces: a thread per question, the "Ask teambot" message menu, user
installs, the buttons under answers (Stop, Regenerate, 👍/👎, after a restart too) and
`listen` channels, with the real discord.py client against the fake Discord."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.discord.settings import load
from adapters.discord.threads import NAME_LIMIT
from bot.config import ConfigError
from bot.engine import Engine
from bot.types import ConversationKey
from tests.fakes.discord import FakeDiscord, InteractionRecord, Posted
from tests.fakes.discord.fixtures import dc
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.mistral import FakeMistral, Reply

pytestmark = pytest.mark.timeout(60)
__all__ = ["bot", "dc"]  # fixtures


@pytest_asyncio.fixture
async def bot(engine: Engine, dc: FakeDiscord) -> AsyncIterator[Running]:
    """The adapter as deployed: TEAMBOT_DISCORD_THREADS on (its default)."""
    running = await start_adapter(engine, dc, threads=True)
    yield running
    await running.stop()


LONG = " ".join(f"word{n}" for n in range(400))


def watch_disconnects(fake: FakeMistral) -> list[BaseException]:
    """What the fake model saw when the client closed a stream it was still writing."""
    closed: list[BaseException] = []
    original = fake._stream

    async def stream(request: Any, body: dict[str, Any], scripted: Any) -> Any:
        try:
            return await original(request, body, scripted)
        except (ConnectionError, asyncio.CancelledError) as exc:
            closed.append(exc)
            raise

    fake._stream = stream  # type: ignore[method-assign]
    return closed


async def landed(bot: Running, dc: FakeDiscord, channel: str, count: int = 1) -> list[Posted]:
    """The bot's public messages in `channel` once there are `count` and every reply has
    landed."""

    def ready() -> list[Posted] | None:
        shown = (p for p in dc.bot_messages(channel) if not p.ephemeral)  # for everyone
        found = sorted(shown, key=lambda p: int(p.id))
        return found if len(found) >= count and bot.adapter.pacer.idle() else None

    result: list[Posted] = await dc.wait_until(ready, what=f"{count} bot message(s) in {channel}")
    return result


async def private_answer(
    dc: FakeDiscord, record: InteractionRecord, bot: Running | None = None
) -> str:
    """What the bot told the clicker (or asker) privately through `record` (once every
    reply has landed, given the `bot`)."""

    def said() -> str | None:
        if bot is not None and not bot.adapter.pacer.idle():
            return None
        texts = [dc.posted[m].content for m in record.followups if m in dc.posted]
        return (
            texts[-1] if texts and texts[-1] and dc.posted[record.followups[-1]].ephemeral else None
        )

    return str(await dc.wait_until(said, what="a private answer"))


def question_of(posted: Posted) -> int:
    ids = [b for b in posted.buttons if b.startswith("tb:")]
    assert ids, posted.payload.get("components")
    return int(ids[0].rsplit(":", 1)[1])


def prompt_text(fake: FakeMistral) -> str:
    return "\n".join(str(m.get("content")) for m in fake.requests[-1]["messages"])


# Threads


async def test_a_mention_starts_a_thread_that_is_followed_without_mentions(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("Tag it, then ship it."), Reply("Friday works too."))
    asked = await dc.user_message(dc.general, dc.alice, "How do we ship the release?", mention=True)
    [answer] = await landed(bot, dc, asked["id"])
    assert dc.threads_started == [asked["id"]]  # a thread's id is its message's
    thread = dc.channels[asked["id"]]
    assert thread["name"] == "How do we ship the release?" and thread["parent_id"] == dc.general
    assert answer.content == "Tag it, then ship it."
    assert dc.bot_messages(dc.general) == []  # nothing in the channel itself
    # In the thread, no mention is needed: the thread is the conversation.
    await dc.user_message(thread["id"], dc.bob, "and on a Friday?")
    later = await landed(bot, dc, thread["id"], 2)
    assert later[-1].content == "Friday works too."
    assert "How do we ship the release?" in prompt_text(fake_mistral)
    # Elsewhere in the channel, still only with a mention.
    await dc.user_message(dc.general, dc.bob, "unrelated chatter")
    await asyncio.sleep(0.3)
    assert len(fake_mistral.requests) == 2 and dc.threads_started == [asked["id"]]


async def test_a_long_question_names_its_thread_within_discords_limit(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("ok"))
    question = "why " * 60 + "\nsecond line"
    asked = await dc.user_message(dc.general, dc.alice, question, mention=True)
    await landed(bot, dc, asked["id"])
    name = dc.channels[asked["id"]]["name"]
    assert len(name) == NAME_LIMIT and name.startswith("why why") and "\n" not in name


async def test_without_thread_permission_it_answers_in_the_channel(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral, caplog: pytest.LogCaptureFixture
) -> None:
    dc.rest.no_threads.add(dc.general)
    fake_mistral.enqueue(Reply("here instead"), Reply("again"))
    with caplog.at_level(logging.WARNING):
        first = await dc.user_message(dc.general, dc.alice, "a question", mention=True)
        await dc.wait_until(lambda: dc.replies_to(first["id"]) and bot.adapter.pacer.idle())
        second = await dc.user_message(dc.general, dc.bob, "another", mention=True)
        await dc.wait_until(lambda: dc.replies_to(second["id"]) and bot.adapter.pacer.idle())
    assert [p.content for p in dc.replies_to(first["id"])] == ["here instead"]
    assert dc.threads_started == [] and dc.requests_to("POST", "/threads")[0].status == 403
    lines = [r for r in caplog.records if "thread" in r.getMessage()]
    assert len(lines) == 1 and "50013" in lines[0].getMessage()  # one line, not one per question


async def test_threads_can_be_turned_off(
    engine: Engine, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    token = {"DISCORD_BOT_TOKEN": "t"}
    assert load(token) == load({**token, "TEAMBOT_DISCORD_THREADS": "true"})
    assert load(token).threads and not load({**token, "TEAMBOT_DISCORD_THREADS": "off"}).threads
    with pytest.raises(ConfigError, match="TEAMBOT_DISCORD_THREADS"):
        load({**token, "TEAMBOT_DISCORD_THREADS": "sometimes"})
    running = await start_adapter(engine, dc, threads=False)
    try:
        fake_mistral.enqueue(Reply("in the channel"))
        asked = await dc.user_message(dc.general, dc.alice, "q", mention=True)
        await dc.wait_until(lambda: dc.replies_to(asked["id"]) and running.adapter.pacer.idle())
        assert dc.threads_started == []
    finally:
        await running.stop()


# The message menu's "Ask teambot", and user installs


async def test_ask_teambot_answers_in_a_thread_on_the_message_with_it_as_context(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("The code is 7421."))
    notes = [("notes.txt", "text/plain", b"launch code: 7421")]
    target = await dc.user_message(dc.general, dc.bob, "see attached", attachments=notes)
    menu = await dc.message_command(
        "Ask teambot", target["id"], user_id=dc.alice, channel_id=dc.general
    )
    await dc.wait_until(lambda: menu.modal, what="the modal")
    assert menu.callbacks[0][1]["type"] == 9  # the modal is the first and only response
    submitted = await dc.submit_modal(menu, "What is the launch code?")
    [answer] = await landed(bot, dc, target["id"])
    assert dc.threads_started == [target["id"]]
    assert dc.channels[target["id"]]["name"] == "What is the launch code?"
    assert answer.content == "The code is 7421."
    prompt = prompt_text(fake_mistral)
    assert "What is the launch code?" in prompt and "launch code: 7421" in prompt
    assert "bob" in prompt  # who wrote the message
    said = await private_answer(dc, submitted)
    assert said == f"Answering in <#{target['id']}>."


async def test_user_installed_commands_answer_through_the_interaction(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    # Every command may be installed by a user and used in DMs and other servers.
    commands = dc.commands["global"]
    assert all(c["integration_types"] == [0, 1] for c in commands)
    assert all(sorted(c["contexts"]) == [0, 1, 2] for c in commands)
    elsewhere = dc.foreign_channel("their-server")  # a server without the bot
    fake_mistral.enqueue(Reply("Answered privately."), Reply("Also privately."))
    target = dc.put_message(elsewhere, dc.bob, "our launch is on Monday")
    menu = await dc.message_command(
        "Ask teambot", target["id"], user_id=dc.alice, channel_id=elsewhere, user_install=True
    )
    await dc.wait_until(lambda: menu.modal, what="the modal")
    submitted = await dc.submit_modal(menu, "when is the launch?")
    assert await private_answer(dc, submitted, bot) == "Answered privately."
    assert "our launch is on Monday" in prompt_text(fake_mistral)
    # /ask too: no external apps for this member there, so only they see it.
    record = await dc.slash("ask", {"prompt": "hi"}, user_id=dc.alice, channel_id=elsewhere)
    assert await private_answer(dc, record, bot) == "Also privately."
    assert record.deferred_ephemeral
    # Its buttons work there too: Regenerate edits the private answer through the click.
    fake_mistral.enqueue(Reply("Redone privately."))
    [answer] = [dc.posted[m] for m in record.followups]
    regen = await dc.click(answer.id, f"tb:regen:{question_of(answer)}", user_id=dc.alice)
    await dc.wait_until(lambda: answer.content == "Redone privately." and bot.adapter.pacer.idle())
    assert answer.ephemeral and regen.callbacks[0][1]["type"] == 6
    assert dc.threads_started == []
    assert not dc.requests_to("POST", f"/channels/{elsewhere}/")  # the bot never posts there


# Buttons


async def test_stop_mid_stream_cancels_the_model_and_keeps_the_text(
    engine: Engine, bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    closed = watch_disconnects(fake_mistral)
    fake_mistral.token_interval = 0.02
    fake_mistral.enqueue(Reply(LONG))
    asked = await dc.user_message(dc.general, dc.alice, "tell me everything", mention=True)

    def streaming() -> Posted | None:
        found = dc.bot_messages(asked["id"])
        return (
            found[-1]
            if found and any(b.startswith("tb:stop:") for b in found[-1].buttons)
            else None
        )

    message: Posted = await dc.wait_until(streaming, what="a Stop button")
    question = question_of(message)
    refused = await dc.click(message.id, f"tb:stop:{question}", user_id=dc.bob)
    assert "alice" in (await private_answer(dc, refused)).lower()  # only the asker (or admins)
    stopped = await dc.click(message.id, f"tb:stop:{question}", user_id=dc.alice)
    assert (await private_answer(dc, stopped)).startswith("Stopped")
    [final] = await landed(bot, dc, asked["id"])
    assert final.content.endswith("*(Stopped by alice.)*")
    kept = final.content.removesuffix("\n\n*(Stopped by alice.)*")
    assert kept and LONG.startswith(kept) and len(kept) < len(LONG)
    assert final.buttons == [f"tb:regen:{question}", f"tb:up:{question}", f"tb:down:{question}"]
    await dc.wait_until(lambda: closed, what="the model stream closed")
    key = ConversationKey("discord", dc.guild_id, dc.general, asked["id"])
    stored = [m for m in await engine.store.messages(str(key)) if m.role == "assistant"]
    assert [m.text for m in stored] == [kept]


async def test_regenerate_replaces_the_answer_in_place(
    engine: Engine, bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("first take"), Reply("second take"))
    asked = await dc.user_message(dc.general, dc.alice, "an idea please", mention=True)
    [answer] = await landed(bot, dc, asked["id"])
    question = question_of(answer)
    record = await dc.click(answer.id, f"tb:regen:{question}", user_id=dc.alice)
    await dc.wait_until(
        lambda: dc.posted[answer.id].content == "second take" and bot.adapter.pacer.idle()
    )
    assert record.callbacks[0][1]["type"] == 6  # acknowledged quietly, no new message
    assert [p.id for p in dc.bot_messages(asked["id"])] == [answer.id]
    assert dc.posted[answer.id].buttons == [
        f"tb:regen:{question}",
        f"tb:up:{question}",
        f"tb:down:{question}",
    ]
    # The engine keeps the new answer in the conversation (the old one as a version).
    key = ConversationKey("discord", dc.guild_id, dc.general, asked["id"])
    stored = [m.text for m in await engine.store.messages(str(key)) if m.role == "assistant"]
    assert stored == ["second take"]
    # Someone else may not redo it: they are told privately and nothing changes.
    other = await dc.click(answer.id, f"tb:regen:{question}", user_id=dc.bob)
    assert "alice" in (await private_answer(dc, other)).lower()
    assert dc.posted[answer.id].content == "second take"


async def test_feedback_is_stored_and_acknowledged_privately(
    engine: Engine, bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    fake_mistral.enqueue(Reply("a fine answer"))
    asked = await dc.user_message(dc.general, dc.alice, "rate me", mention=True)
    [answer] = await landed(bot, dc, asked["id"])
    question = question_of(answer)
    up = await dc.click(answer.id, f"tb:up:{question}", user_id=dc.bob)
    assert "👍" in await private_answer(dc, up)
    down = await dc.click(answer.id, f"tb:down:{question}", user_id=dc.alice)
    assert "👎" in await private_answer(dc, down)
    report = await engine.store.feedback_report(since=0)
    assert [(ups, downs) for _, ups, downs in report.days] == [(1, 1)]


async def test_buttons_work_after_a_restart(
    make_engine: Any, dc: FakeDiscord, fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    db = tmp_path / "restart.db"
    first_engine = await make_engine(db)
    first = await start_adapter(first_engine, dc, threads=True)
    fake_mistral.enqueue(Reply("before the restart"), Reply("after the restart"))
    asked = await dc.user_message(dc.general, dc.alice, "remember me", mention=True)
    [answer] = await landed(first, dc, asked["id"])
    question = question_of(answer)
    await first.stop()
    await first_engine.aclose()
    engine = await make_engine(db)  # a new process on the same database
    second = await start_adapter(engine, dc, threads=True)
    try:
        vote = await dc.click(answer.id, f"tb:up:{question}", user_id=dc.bob)
        assert "👍" in await private_answer(dc, vote)
        report = await engine.store.feedback_report(since=0)
        assert [(ups, downs) for _, ups, downs in report.days] == [(1, 0)]
        await dc.click(answer.id, f"tb:regen:{question}", user_id=dc.alice)
        await dc.wait_until(
            lambda: (
                dc.posted[answer.id].content == "after the restart" and second.adapter.pacer.idle()
            )
        )
    finally:
        await second.stop()


# listen


async def test_a_listening_channel_answers_every_message_in_a_thread(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    record = await dc.slash("listen", {"mode": "on"}, user_id=dc.owner_id, channel_id=dc.general)
    await dc.wait_until(lambda: record.followups and dc.posted[record.followups[0]].content)
    fake_mistral.enqueue(Reply("heard you"))
    asked = await dc.user_message(dc.general, dc.alice, "no mention here")
    [answer] = await landed(bot, dc, asked["id"])
    assert answer.content == "heard you" and dc.threads_started == [asked["id"]]
    # Other channels still need a mention.
    await dc.user_message(dc.channels[dc.by_name["random"]]["id"], dc.alice, "hello?")
    await asyncio.sleep(0.3)
    assert len(fake_mistral.requests) == 1
