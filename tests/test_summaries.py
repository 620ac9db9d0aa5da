"""`summarize` and memory beyond the budget: the engine, the real Mistral client, the fake
Mistral and real SQLite."""

from __future__ import annotations

import re

from bot.memory import Memory
from bot.types import PRIVATE, PUBLIC, ConversationKey, Place, ReplyDone
from tests.fakes.mistral import Error, Reply, error_body
from tests.helpers import ALICE, BOB, collect, final, key, message
from tests.test_tool_loop import ChatLinks

GENERAL = Place("C9", "general", PUBLIC)
SECRET = Place("C7", "secret", PRIVATE)


def said(text: str, place: Place = GENERAL, author=BOB, thread: str = ""):
    return message(text, conv=key(place.id, thread), author=author, is_group=True, place=place)


async def summarize(engine, args: str, place: Place = GENERAL, thread: str = "", author=ALICE):
    return await engine.command(
        key(place.id, thread), author, "summarize", args, is_group=True, place=place
    )


async def test_a_channel_summary_cites_messages_and_says_what_it_covered(engine, fake_mistral):
    engine.register_links("test", ChatLinks())
    notes = [said("we ship the release on friday"), said("who writes the changelog?")]
    for note in notes:
        await engine.record(note)
    fake_mistral.enqueue(
        Reply("**Decisions**\n- Ship on Friday [1].\n**Open questions**\n- Changelog owner [2, 9]")
    )
    result = await summarize(engine, "2h")
    assert not result.private
    assert f"[1](https://chat.test/{notes[0].key}/{notes[0].id})" in result.text
    assert f"[2](https://chat.test/{notes[1].key}/{notes[1].id}) [9]" in result.text
    assert re.search(
        r"_Said here over the last 2 hours · .* · 2 messages · 1 model call · \$0\.\d{4}_$",
        result.text,
    )
    request = fake_mistral.requests[-1]
    assert (
        "[1]" in request["messages"][1]["content"]
        and "Bob: we ship the release" in request["messages"][1]["content"]
    )
    assert request["reasoning_effort"] == "none" and "tools" not in request
    rows = await engine.store._run(engine.store._rows, "SELECT kind FROM usage")
    assert [r["kind"] for r in rows] == ["summary"]


async def test_nothing_said_is_one_line_without_a_model_call(engine, fake_mistral):
    result = await summarize(engine, "30m private")
    assert result.private
    assert result.text == "Nothing was said here over the last 30 minutes."
    assert fake_mistral.requests == []
    bad = await summarize(engine, "yesterday-ish")
    assert bad.text.startswith("Use `summarize`")


async def test_the_default_is_since_the_askers_last_message(engine, fake_mistral):
    await engine.record(said("old news", author=BOB))
    await engine.record(said("I am off for lunch", author=ALICE))
    await engine.record(said("staging is down", author=BOB))
    fake_mistral.enqueue(Reply("Staging is down [1]."))
    result = await summarize(engine, "")
    content = fake_mistral.requests[-1]["messages"][1]["content"]
    assert "staging is down" in content and "old news" not in content and "lunch" not in content
    assert "_Said here since your last message" in result.text


async def test_a_thread_summary_reads_the_thread_and_a_link_reads_its_thread(engine, fake_mistral):
    engine.register_links("test", ChatLinks())
    root = said("incident: api is slow")
    await engine.record(root)
    await engine.record(said("looking into it", thread=root.id))
    await engine.record(said("fixed by a restart", thread=root.id))
    await engine.record(said("unrelated chatter"))
    fake_mistral.enqueue(Reply("Fixed [3]."), Reply("Fixed [3]."))
    in_thread = await summarize(engine, "", thread=root.id)
    assert "_Said in this thread" in in_thread.text
    assert "2 messages" in in_thread.text
    linked = await summarize(engine, f"https://chat.test/{root.key}/{root.id}")
    content = fake_mistral.requests[-1]["messages"][1]["content"]
    assert "incident: api is slow" in content and "fixed by a restart" in content
    assert "unrelated" not in content
    assert "_Said in the thread of that message" in linked.text


async def test_a_private_channel_stays_out_of_summaries_asked_elsewhere(engine, fake_mistral):
    engine.register_links("test", ChatLinks())
    secret = said("zebra-merger-plans", place=SECRET)
    await engine.record(secret)
    result = await summarize(engine, f"https://chat.test/{secret.key}/{secret.id}")
    assert "not available" in result.text
    other = await engine.command(
        ConversationKey("test", "T1", "C9"), ALICE, "summarize", "7d", place=GENERAL
    )
    assert other.text.startswith("Nothing was said")
    assert fake_mistral.requests == []
    fake_mistral.enqueue(Reply("Plans [1]."))
    inside = await summarize(engine, "1d", place=SECRET)
    assert "zebra-merger-plans" in fake_mistral.requests[-1]["messages"][1]["content"]
    assert "1 message" in inside.text


async def test_a_long_span_is_summarised_in_chunks_then_combined(make_engine, fake_mistral):
    engine = await make_engine(context_tokens=3000)
    for n in range(400):
        await engine.record(said(f"status update number {n}: the build is green and tests pass"))
    result = await summarize(engine, "1d")
    summaries = fake_mistral.requests
    assert len(summaries) >= 3  # two chunks or more, then one combining call
    assert "Merge them" in summaries[-1]["messages"][0]["content"]
    numbers = [
        int(n)
        for body in summaries[:-1]
        for n in re.findall(r"^\[(\d+)\]", body["messages"][1]["content"], re.M)
    ]
    assert numbers == list(range(1, 401))  # every message once, numbered across chunks
    assert f"{len(summaries)} model calls" in result.text and "400 messages" in result.text


async def test_a_failed_summary_is_one_sentence(engine, fake_mistral):
    await engine.record(said("something"))
    fake_mistral.enqueue(Error(401, error_body("Unauthorized", "invalid_api_key")))
    result = await summarize(engine, "1h")
    assert "rejected" in result.text or "key" in result.text
    assert "\n" not in result.text


async def test_a_fact_from_turn_one_reaches_turn_two_hundred_through_memory(
    make_engine, fake_mistral
):
    engine = await make_engine(context_tokens=1500)
    echo = fake_mistral._default_reply

    def reply(body):
        system = body["messages"][0]["content"]
        if system.startswith("Below is the running summary"):
            known = "locker code 4711" if "4711" in body["messages"][1]["content"] else "nothing"
            return Reply(f"Known facts: {known}.")
        return echo(body)

    fake_mistral._default_reply = reply
    await collect(engine, message("remember: my locker code is 4711"))
    for n in range(199):
        await collect(engine, message(f"turn {n}: some more words to fill the window up"))
        await engine.pipeline.memory.idle()
    last = [b for b in fake_mistral.requests if "tools" in b][-1]
    assert "locker code 4711" in last["messages"][0]["content"]
    assert "remember: my locker code" not in str(last["messages"][1:])  # long out of the window
    memory = Memory.loads((await engine.conversation_settings(key())).memory)
    assert memory.upto > 0 and "4711" in memory.text
    rows = await engine.store._run(
        engine.store._rows, "SELECT kind, count(*) AS n FROM usage GROUP BY kind"
    )
    kinds = {r["kind"]: r["n"] for r in rows}
    assert kinds["reply"] == 200 and kinds["summary"] >= 3
    # reset forgets the memory too
    await engine.command(key(), ALICE, "reset", "", is_group=False)
    assert (await engine.conversation_settings(key())).memory is None


async def test_a_failed_memory_update_keeps_the_reply_and_the_old_summary(
    make_engine, fake_mistral
):
    engine = await make_engine(context_tokens=1500)
    for n in range(80):
        await engine.record(
            message(f"filler {n} with several words in it to take room", author=BOB)
        )
    echo = fake_mistral._default_reply

    def reply(body):  # memory updates are refused (a 401 is never retried); replies work
        if body["messages"][0]["content"].startswith("Below is the running summary"):
            return Error(401, error_body("Unauthorized", "invalid_api_key"))
        return echo(body)

    fake_mistral._default_reply = reply
    done = final(await collect(engine, message("question")))
    assert isinstance(done, ReplyDone) and done.text.endswith("question")
    await engine.pipeline.memory.idle()
    assert (await engine.conversation_settings(key())).memory is None
    summary_calls = [b for b in fake_mistral.requests if "tools" not in b]
    assert summary_calls  # it was tried, and failed


async def test_reset_while_a_memory_update_is_under_way_leaves_no_summary(
    make_engine, fake_mistral
):
    engine = await make_engine(context_tokens=1500)
    for n in range(80):
        await engine.record(
            message(f"filler {n} with several words in it to take room", author=BOB)
        )

    def reply(body):
        if body["messages"][0]["content"].startswith("Below is the running summary"):
            return Reply("Bob posted filler.", chunks=["Bob", " posted", " some", " filler."])
        return Reply("ok")

    fake_mistral._default_reply = reply
    fake_mistral.token_interval = 0.1  # the memory update takes longer than the answer
    await collect(engine, message("question"))  # trims: a memory update starts
    assert engine.pipeline.memory._tasks  # still under way
    await engine.command(key(), ALICE, "reset", "", is_group=False)
    await engine.pipeline.memory.idle()
    assert (await engine.conversation_settings(key())).memory is None
