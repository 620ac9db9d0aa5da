"""The engine against the real Mistral client, a loopback fake Mistral and real SQLite."""

from __future__ import annotations

import asyncio
import uuid

from bot import tokens
from bot.errors import ModelAuthError, ModelUnavailable
from bot.pipeline import CUT_BY_SHUTDOWN
from bot.types import (
    AttachmentMeta,
    Image,
    Message,
    ReplyDone,
    ReplyFailed,
    TextDelta,
    ThinkingDelta,
)
from tests.fakes.mistral import Disconnect, Error, FakeMistral, Reply, error_body
from tests.helpers import (
    ALICE,
    BOB,
    collect,
    final,
    key,
    message,
    prompt_text,
    streamed_text,
)


async def test_reply_streams_then_stores_both_turns(engine, fake_mistral):
    events = await collect(engine, message("hello there"))
    done = final(events)
    assert isinstance(done, ReplyDone)
    assert streamed_text(events) == done.text == "echo: hello there"
    assert sum(isinstance(e, TextDelta) for e in events) > 1  # really streamed
    rows = await engine.store.messages(str(key()))
    assert [(r.role, r.text) for r in rows] == [
        ("user", "hello there"),
        ("assistant", "echo: hello there"),
    ]
    assert fake_mistral.requests[0]["reasoning_effort"] == "none"
    assert fake_mistral.requests[0]["max_tokens"] == 4096


async def test_second_reply_to_same_message_yields_nothing(engine, fake_mistral):
    msg = message("once only")
    assert isinstance(final(await collect(engine, msg)), ReplyDone)
    assert await collect(engine, msg) == []
    assert len(fake_mistral.requests) == 1


async def test_history_survives_restart(make_engine, fake_mistral, tmp_path):
    db = tmp_path / "restart.db"
    first = await make_engine(db)
    await collect(first, message("my favourite colour is teal"))
    await first.aclose()
    second = await make_engine(db)
    await collect(second, message("what is my favourite colour?"))
    seen = prompt_text(fake_mistral.requests[-1])
    assert "my favourite colour is teal" in seen
    assert "echo: my favourite colour is teal" in seen


async def test_concurrent_conversations_never_see_each_other(make_engine):
    fake = FakeMistral(token_interval=0.002)
    async with fake:
        engine = await make_engine(mistral_base_url=fake.base_url)
        convs = [key(f"C{i}") for i in range(12)]

        async def talk(i: int) -> list[str]:
            answers = []
            for turn in range(3):
                events = await collect(engine, message(f"secret-{i}-{turn}", conv=convs[i]))
                answers.append(streamed_text(events))
            return answers

        results = await asyncio.gather(*(talk(i) for i in range(12)))
        for i, answers in enumerate(results):
            assert answers == [f"echo: secret-{i}-{t}" for t in range(3)]
        assert len(fake.requests) == 36
        for body in fake.requests:
            seen = prompt_text(body)
            owners = {int(s.split("-")[1]) for s in seen.split() if s.startswith("secret-")}
            assert len(owners) == 1, seen
        # Conversations really ran in parallel: a request arrived while another streamed.
        spans = list(zip(fake.request_times, fake.last_token_times, strict=True))
        assert any(a < b_start < a_end for a, a_end in spans for b_start, _ in spans)


async def test_one_conversation_answers_in_arrival_order_one_at_a_time(make_engine):
    fake = FakeMistral(token_interval=0.01)
    async with fake:
        engine = await make_engine(mistral_base_url=fake.base_url)
        msgs = [message(f"question {n}") for n in range(4)]
        results = await asyncio.gather(*(collect(engine, m) for m in msgs))
        assert [final(r).text for r in results] == [f"echo: question {n}" for n in range(4)]
        for n in range(1, 4):
            # Reply n started only after reply n-1 finished streaming.
            assert fake.request_times[n] >= fake.last_token_times[n - 1]
            assert f"echo: question {n - 1}" in prompt_text(fake.requests[n])


async def test_thinking_kept_apart_and_think_prefix_asks_for_reasoning(engine, fake_mistral):
    fake_mistral.enqueue(Reply("The answer is 4.", thinking="2 plus 2 makes 4"))
    events = await collect(engine, message("think: what is 2+2?"))
    assert fake_mistral.requests[0]["reasoning_effort"] == "high"
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert thinking == "2 plus 2 makes 4"
    done = final(events)
    assert isinstance(done, ReplyDone)
    assert done.text == "The answer is 4." and done.thinking == thinking
    assert not done.show_thinking
    rows = await engine.store.messages(str(key()))
    assert rows[0].text == "what is 2+2?"  # prefix stripped before storing
    assert rows[1].thinking == "2 plus 2 makes 4"


async def test_reasoning_command_sets_conversation_default(engine, fake_mistral):
    result = await engine.command(key(), ALICE, "reasoning", "on")
    assert "on" in result.text
    await collect(engine, message("a"))
    await engine.command(key(), ALICE, "reasoning", "show")
    fake_mistral.enqueue(Reply("b!", thinking="hmm"))
    shown = final(await collect(engine, message("b")))
    await engine.command(key(), ALICE, "reasoning", "off")
    await collect(engine, message("c"))
    await collect(engine, message("think: d"))
    await collect(engine, message("e", conv=key("other")))
    efforts = [r["reasoning_effort"] for r in fake_mistral.requests]
    assert efforts == ["high", "high", "none", "high", "none"]
    assert isinstance(shown, ReplyDone) and shown.show_thinking
    assert "**off**" in (await engine.command(key(), ALICE, "reasoning", "")).text
    bad = await engine.command(key(), ALICE, "reasoning", "maybe")
    assert bad.private and "reasoning on" in bad.text


async def test_message_option_overrides_default(engine, fake_mistral):
    await engine.command(key(), ALICE, "reasoning", "on")
    await collect(engine, message("quick one", reasoning=False))
    assert fake_mistral.requests[0]["reasoning_effort"] == "none"


async def test_reset_forgets_only_this_conversation(engine, fake_mistral):
    await collect(engine, message("alpha fact"))
    await collect(engine, message("beta fact", conv=key("C2")))
    result = await engine.command(key(), ALICE, "reset", "")
    assert "2 messages" in result.text
    await collect(engine, message("next"))
    await collect(engine, message("more", conv=key("C2")))
    assert "alpha fact" not in prompt_text(fake_mistral.requests[2])
    assert "beta fact" in prompt_text(fake_mistral.requests[3])


async def test_system_command_admins_only_in_groups(make_engine, fake_mistral):
    engine = await make_engine(admin_ids=frozenset({"U2"}))
    refused = await engine.command(key(), ALICE, "system", "talk like a pirate")
    assert refused.private and "admins" in refused.text.lower()
    accepted = await engine.command(key(), BOB, "system", "talk like a pirate")
    assert not accepted.private
    own_dm = await engine.command(key("D1"), ALICE, "system", "be brief", is_group=False)
    assert "set" in own_dm.text
    await collect(engine, message("hi"))
    await collect(engine, message("hi", conv=key("C9")))
    assert "talk like a pirate" in fake_mistral.requests[0]["messages"][0]["content"]
    assert "pirate" not in prompt_text(fake_mistral.requests[1])
    shown = await engine.command(key(), ALICE, "system", "")
    assert "pirate" in shown.text
    await engine.command(key(), BOB, "system", "clear")
    await collect(engine, message("again"))
    assert "pirate" not in prompt_text(fake_mistral.requests[2])


async def test_usage_counts_tokens_and_dollars(engine, fake_mistral):
    fake_mistral.enqueue(
        Reply(
            "ok",
            usage={
                "prompt_tokens": 1_000_000,
                "completion_tokens": 500_000,
                "total_tokens": 1_500_000,
            },
        )
    )
    await collect(engine, message("expensive"))
    await collect(engine, message("other person", author=BOB, conv=key("C2")))
    result = await engine.command(key(), ALICE, "usage", "")
    assert result.private
    lines = result.text.splitlines()
    you = next(line for line in lines if line.startswith("• You"))
    assert "1,000,000 tokens in / 500,000 out, $0.4500" in you  # 0.15 + 0.30
    conversation = next(line for line in lines if "This conversation" in line)
    assert "1 model call" in conversation
    everyone = next(line for line in lines if "today" in line)
    assert "2 model calls" in everyone


async def test_help_mentions_every_command_and_think(engine):
    text = (await engine.command(key(), ALICE, "help", "")).text
    for word in ("reset", "reasoning", "system", "usage", "think:"):
        assert word in text
    unknown = await engine.command(key(), ALICE, "dance", "")
    assert "help" in unknown.text


async def test_group_prompts_name_speakers_dms_do_not(engine, fake_mistral):
    await engine.record(message("we ship on friday", author=BOB, is_group=True))
    await collect(engine, message("when do we ship?", is_group=True))
    await collect(engine, message("just me here", conv=key("D1"), is_group=False))
    group = fake_mistral.requests[0]["messages"]
    assert group[-1]["content"] == "[Bob]: we ship on friday\n\n[Alice]: when do we ship?"
    assert fake_mistral.requests[1]["messages"][-1]["content"] == "just me here"


async def test_edits_and_deletions_reach_the_prompt(engine, fake_mistral):
    first = message("the password is swordfish", author=BOB)
    second = message("lunch at noon", author=BOB)
    await engine.record(first)
    await engine.record(second)
    assert await engine.edit(first.key, first.id, "the meeting is at 3")
    assert await engine.delete(second.key, second.id)
    await collect(engine, message("summarise"))
    seen = prompt_text(fake_mistral.requests[0])
    assert "the meeting is at 3" in seen
    assert "swordfish" not in seen and "lunch" not in seen


async def test_seed_copies_channel_messages_into_new_thread(engine, fake_mistral):
    channel, thread = key("C1"), key("C1", "t1")
    await engine.record(message("channel context line", author=BOB, conv=channel))
    assert await engine.seed(channel, thread) == 1
    assert await engine.seed(channel, thread) == 0  # only an empty conversation is seeded
    await collect(engine, message("in the thread", conv=thread))
    assert "channel context line" in prompt_text(fake_mistral.requests[0])


async def test_images_go_as_image_url_parts(engine, fake_mistral):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    meta = (AttachmentMeta("chart.png", "image/png", len(png)),)
    await collect(
        engine,
        message("what is this?", images=(Image("image/png", png, "chart.png"),), attachments=meta),
    )
    last = fake_mistral.requests[0]["messages"][-1]["content"]
    assert last[0]["type"] == "text" and "what is this?" in last[0]["text"]
    assert last[1]["type"] == "image_url"
    assert last[1]["image_url"].startswith("data:image/png;base64,iVBORw0KGgo")
    await collect(engine, message("and now?"))
    later = fake_mistral.requests[1]["messages"]
    assert all(isinstance(m["content"], str) for m in later)  # no stale image bytes
    assert "[image: chart.png]" in prompt_text(fake_mistral.requests[1])


async def test_budget_trims_in_chunks_keeping_system_and_newest(make_engine, fake_mistral):
    budget = 1500
    engine = await make_engine(context_tokens=budget)
    echo = fake_mistral._default_reply

    def reply(body):  # memory updates get a short summary, as a model would write
        if body["messages"][0]["content"].startswith("Below is the running summary"):
            return Reply("Bob posted numbered filler messages.")
        return echo(body)

    fake_mistral._default_reply = reply
    for n in range(120):
        await engine.record(message(f"filler message number {n} with some words in it", author=BOB))
    for n in range(6):
        await collect(engine, message(f"question {n}"))
    # Replies' requests; the others fold the dropped turns into the running summary.
    bodies = [b for b in fake_mistral.requests if "tools" in b]
    assert len(bodies) == 6
    for body in bodies:
        estimated = sum(tokens.count(m["content"]) for m in body["messages"])
        assert estimated <= budget
        assert body["messages"][0]["role"] == "system"
        assert "teambot" in body["messages"][0]["content"]
    assert "question 5" in bodies[-1]["messages"][-1]["content"]
    assert "filler message number 119" in prompt_text(bodies[0])
    assert "filler message number 0 " not in prompt_text(bodies[0])
    # Between trims the prompt only grows: the previous prompt is a prefix of the next.
    stable = sum(
        bodies[i + 1]["messages"][: len(bodies[i]["messages"]) - 1] == bodies[i]["messages"][:-1]
        for i in range(len(bodies) - 1)
    )
    assert stable >= 3


async def test_message_alone_over_budget_fails_clearly(make_engine, fake_mistral):
    engine = await make_engine(context_tokens=1000)
    events = await collect(engine, message("word " * 3000))
    failed = final(events)
    assert isinstance(failed, ReplyFailed) and "too long" in failed.notice
    assert fake_mistral.requests == []
    assert len(await engine.store.messages(str(key()))) == 1  # the message itself is kept


async def test_context_too_long_from_api_retries_once_with_less(engine, fake_mistral):
    for n in range(10):
        await engine.record(message(f"old line {n} " + "padding words " * 20, author=BOB))
    fake_mistral.enqueue(
        Error(
            400,
            error_body(
                "Prompt contains 300000 tokens, too large for model with "
                "262144 maximum context length",
                "invalid_request_error",
            ),
        )
    )
    done = final(await collect(engine, message("latest")))
    assert isinstance(done, ReplyDone) and done.text.endswith("latest")
    first, retry = (prompt_text(body) for body in fake_mistral.requests if "tools" in body)
    assert retry.count("old line") < first.count("old line") == 10
    assert "old line 9" in retry  # the newest context survives the trim


async def test_auth_failure_is_one_sentence_and_message_kept(engine, fake_mistral):
    fake_mistral.enqueue(Error(401, error_body("Unauthorized", "invalid_api_key")))
    failed = final(await collect(engine, message("hello")))
    assert isinstance(failed, ReplyFailed)
    assert failed.notice == ModelAuthError.user_message
    rows = await engine.store.messages(str(key()))
    assert [r.role for r in rows] == ["user"]
    usage = await engine.store.usage_totals()
    assert usage.calls == 1


async def test_stream_cut_keeps_partial_answer(engine, fake_mistral):
    fake_mistral.enqueue(Disconnect(after_text="The first half of"))
    events = await collect(engine, message("tell me"))
    done = final(events)
    assert isinstance(done, ReplyDone) and done.cut_off
    assert done.text == streamed_text(events) == "The first half of"
    assert "cut off" in done.notice
    rows = await engine.store.messages(str(key()))
    assert rows[-1].role == "assistant" and rows[-1].text == "The first half of"
    assert len(fake_mistral.requests) == 1  # no silent retry after text was shown


async def test_model_down_tells_user(engine, fake_mistral):
    fake_mistral.enqueue(*[Error(503, error_body("down", "server_error"))] * 50)
    failed = final(await collect(engine, message("anyone?")))
    assert isinstance(failed, ReplyFailed)
    assert failed.notice == ModelUnavailable.user_message


async def test_shutdown_cuts_and_stores_in_flight_reply(make_engine):
    fake = FakeMistral(token_interval=0.05, default_tokens=200)
    async with fake:
        engine = await make_engine(mistral_base_url=fake.base_url)
        events = []
        streaming = asyncio.Event()

        async def consume():
            async for event in engine.reply(message("long story please")):
                events.append(event)
                if isinstance(event, TextDelta):
                    streaming.set()

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(streaming.wait(), 5)
        await engine.shutdown(grace=0.1)
        await asyncio.wait_for(consumer, 2)
        done = final(events)
        assert isinstance(done, ReplyDone) and done.cut_off and done.notice == CUT_BY_SHUTDOWN
        rows = await engine.store.messages(str(key()))
        assert rows[-1].role == "assistant" and rows[-1].text == done.text != ""
        late = [e async for e in engine.reply(message("after shutdown"))]
        assert isinstance(final(late), ReplyFailed)


async def test_engine_on_postgresql_keeps_context_across_restart(fake_mistral):
    from bot.config import Settings
    from bot.engine import Engine
    from bot.mistral import MistralClient
    from tests.test_store import drop_schema, open_backend

    schema = f"e_{uuid.uuid4().hex[:12]}"
    settings = Settings(mistral_api_key="k", mistral_base_url=fake_mistral.base_url)
    try:
        for text in ("the build server is named kestrel", "what is the build server called?"):
            store = await open_backend("postgres", schema)
            engine = Engine(settings, store, MistralClient("k", fake_mistral.base_url, "m"))
            done = final(await collect(engine, message(text)))
            assert isinstance(done, ReplyDone)
            await engine.aclose()
        assert "echo: the build server is named kestrel" in prompt_text(fake_mistral.requests[1])
    finally:
        await drop_schema(schema)


async def test_empty_mention_still_sends_valid_content(engine, fake_mistral):
    done = final(await collect(engine, message("   ")))
    assert isinstance(done, ReplyDone)
    assert fake_mistral.requests[0]["messages"][-1]["content"].strip() != ""


async def test_a_conversation_window_is_read_once_then_only_new_rows(engine, fake_mistral):
    reads = {"window": 0, "since": 0}
    store = engine.store
    window, since = store.window, store.messages_since

    async def counted_window(conversation):
        reads["window"] += 1
        return await window(conversation)

    async def counted_since(conversation, after_id):
        reads["since"] += 1
        return await since(conversation, after_id)

    store.window, store.messages_since = counted_window, counted_since
    for text in ("one", "two", "three"):
        assert isinstance(final(await collect(engine, message(text))), ReplyDone)
        await asyncio.sleep(0.01)  # the turn is over: the next question finds it idle
    # The first turn reads the window; later ones only the rows since, with the question.
    assert reads == {"window": 1, "since": 2}
    assert "echo: one" in prompt_text(fake_mistral.requests[-1])
    # A question recorded earlier as context, with other text, is read again, not reused.
    context = message("draft wording")
    await engine.record(context)
    edited = Message(context.key, context.id, context.author, "final wording", is_group=False)
    assert isinstance(final(await collect(engine, edited)), ReplyDone)
    assert "final wording" in prompt_text(fake_mistral.requests[-1])
    assert "draft wording" not in prompt_text(fake_mistral.requests[-1])
