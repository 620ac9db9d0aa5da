"""Replies that use tools: the engine, the real Mistral client, the fake Mistral (which
checks tool-call histories as the API does) and real SQLite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bot.config import load_settings
from bot.tools.loop import LIMIT_NOTE
from bot.tools.mcp_servers import McpServers
from bot.types import (
    DM,
    PRIVATE,
    PUBLIC,
    Author,
    ConversationKey,
    Message,
    Place,
    ReplyDone,
    TextDelta,
    ToolActivity,
)
from tests.fakes.mistral import Reply, ToolCall, ToolCalls
from tests.helpers import BOB, collect, final, key, message

MCP_FAKE = str(Path(__file__).parent / "fakes" / "mcp_server.py")
GENERAL = Place("C9", "general", PUBLIC)
RANDOM = Place("C1", "random", PUBLIC)
SECRET = Place("C7", "secret-plans", PRIVATE)


class ChatLinks:
    """The "test" platform's links: https://chat.test/<conversation>/<message id>."""

    def permalink(self, conversation: str, platform_id: str) -> str:
        return f"https://chat.test/{conversation}/{platform_id}"

    def parse(self, url: str) -> tuple[str, str] | None:
        if not url.startswith("https://chat.test/"):
            return None
        conversation, _, platform_id = url.removeprefix("https://chat.test/").rpartition("/")
        return conversation, platform_id


def said(text: str, place: Place, author: Author = BOB, **kw) -> Message:
    return message(text, conv=key(place.id), author=author, is_group=True, place=place, **kw)


def asked(text: str, place: Place = RANDOM) -> Message:
    return message(text, conv=key(place.id), is_group=True, place=place)


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_a_search_round_then_an_answer_citing_the_link(engine, fake_mistral):
    engine.register_links("test", ChatLinks())
    note = said("we ship the release on friday", GENERAL)
    await engine.record(note)
    fake_mistral.enqueue(
        ToolCalls([ToolCall("search_messages", {"query": "release"})]),
        Reply("Friday, says Bob."),
    )
    events = await collect(engine, asked("when is the release?"))
    done = final(events)
    assert isinstance(done, ReplyDone) and done.text == "Friday, says Bob."
    assert done.tools == ("search_messages",)
    assert [e.text for e in events if isinstance(e, ToolActivity)] == [
        "Searching for “release”…",
        "",
    ]
    first, second = fake_mistral.requests
    assert first["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in first["tools"]] == [
        "search_messages",
        "read_messages",
        "current_time",
    ]
    (result,) = tool_messages(second)
    assert "we ship the release on friday" in result["content"]
    assert "#general" in result["content"] and "Bob" in result["content"]
    assert f"https://chat.test/{note.key}/{note.id}" in result["content"]
    assert result["tool_call_id"] == fake_mistral.tool_call_ids[0]
    rows = await engine.store._run(engine.store._rows, "SELECT kind FROM usage ORDER BY id")
    kinds = [row["kind"] for row in rows]
    assert kinds == ["tool_round", "reply"]
    assert done.usage.prompt_tokens > 0


async def test_a_later_turn_replays_the_rounds_byte_for_byte(make_engine, fake_mistral, tmp_path):
    db = tmp_path / "tools.db"
    engine = await make_engine(db)
    await engine.record(said("the staging db was down at noon", GENERAL))
    fake_mistral.enqueue(
        ToolCalls([ToolCall("search_messages", {"query": "staging db"})]),
        Reply("At noon."),
    )
    await collect(engine, asked("when was staging down?"))
    await engine.aclose()  # a restart between the two turns
    engine = await make_engine(db)
    fake_mistral.enqueue(Reply("You're welcome."))
    done = final(await collect(engine, asked("thanks")))
    assert isinstance(done, ReplyDone) and done.text == "You're welcome."
    second, third = fake_mistral.requests[1], fake_mistral.requests[2]
    replayed = third["messages"][: len(second["messages"])]
    assert json.dumps(replayed) == json.dumps(second["messages"])  # prefix unchanged
    after = third["messages"][len(second["messages"]) :]
    assert after == [
        {"role": "assistant", "content": "At noon."},
        {"role": "user", "content": "[Alice]: thanks"},
    ]


async def test_the_round_limit_asks_for_an_answer_with_what_it_has(make_engine, fake_mistral):
    engine = await make_engine(tool_rounds=2)
    fake_mistral.enqueue(
        ToolCalls([ToolCall("current_time", {})]),
        ToolCalls([ToolCall("current_time", {"timezone": "Europe/Paris"})]),
        Reply("It is late."),
    )
    done = final(await collect(engine, asked("what time is it?")))
    assert isinstance(done, ReplyDone) and done.tools == ("current_time", "current_time")
    assert [r["tool_choice"] for r in fake_mistral.requests] == ["auto", "auto", "none"]
    last_result = tool_messages(fake_mistral.requests[2])[-1]["content"]
    assert last_result.endswith(LIMIT_NOTE)
    assert "Europe/Paris" in last_result


async def test_bad_calls_become_error_results_and_the_reply_goes_on(engine, fake_mistral):
    fake_mistral.enqueue(
        ToolCalls(
            [
                ToolCall("search_messages", "{not json"),
                ToolCall("format_disk", {}),
                ToolCall("search_messages", {"limit": "many"}),
                ToolCall("current_time", {"timezone": "Mars/Olympus"}),
            ]
        ),
        Reply("Sorry, I could not look that up."),
    )
    done = final(await collect(engine, asked("find it")))
    assert isinstance(done, ReplyDone) and done.text == "Sorry, I could not look that up."
    contents = [m["content"] for m in tool_messages(fake_mistral.requests[1])]
    assert contents == [
        "Error: the arguments are not valid JSON.",
        "Error: there is no tool named 'format_disk'.",
        "Error: `query` is required",
        "Error: unknown time zone 'Mars/Olympus'",
    ]


async def test_tools_off_here_and_for_the_whole_bot(make_engine, fake_mistral):
    engine = await make_engine()
    admin = engine.settings.admin_ids
    assert not admin  # in a DM anyone may change it
    result = await engine.command(key("D1"), BOB, "tools", "off", is_group=False)
    assert "off" in result.text
    await collect(engine, message("hi", conv=key("D1")))
    assert "tools" not in fake_mistral.requests[-1]
    await collect(engine, message("hi", conv=key("D2")))
    assert "tools" in fake_mistral.requests[-1]
    quiet = await make_engine(tools=())
    await collect(quiet, message("hi", conv=key("D3")))
    assert "tools" not in fake_mistral.requests[-1]
    assert "search_messages" not in fake_mistral.requests[-1]["messages"][0]["content"]


async def test_canaries_outside_the_askers_scope_never_reach_the_model(engine, fake_mistral):
    engine.register_links("test", ChatLinks())
    other_guild = ConversationKey("test", "T2", "C9")
    hidden = [
        said("CANARYPRIV zebra-launch-code", SECRET),
        message("CANARYDM zebra-salary", conv=key("D5"), author=BOB, place=Place("D5", "", DM)),
        message("CANARYGUILD zebra-other-team", conv=other_guild, author=BOB, place=GENERAL),
        message("CANARYNOPLACE zebra-no-place", conv=key("C8"), author=BOB, is_group=True),
    ]
    for note in hidden:
        await engine.record(note)
    await engine.record(said("visible words in general", GENERAL))
    link = f"https://chat.test/{hidden[0].key}/{hidden[0].id}"
    fake_mistral.enqueue(
        ToolCalls(
            [
                ToolCall("search_messages", {"query": "CANARYPRIV"}),
                ToolCall("search_messages", {"query": "CANARYDM CANARYGUILD CANARYNOPLACE"}),
                ToolCall("read_messages", {"link": link}),
                ToolCall("read_messages", {"channel": "secret-plans"}),
                ToolCall("search_messages", {"query": "words", "channel": "general"}),
            ]
        ),
        Reply("Nothing."),
    )
    await collect(engine, asked("tell me the secrets"))
    assert "zebra" not in json.dumps(fake_mistral.requests)
    contents = [m["content"] for m in tool_messages(fake_mistral.requests[1])]
    assert contents[0] == "No messages found for “CANARYPRIV”."
    assert contents[1].startswith("No messages found")
    assert "not available" in contents[2]
    assert contents[3].startswith("Error: no channel 'secret-plans'")
    assert "visible words in general" in contents[4]
    # From inside the private channel, its own canary is readable.
    fake_mistral.enqueue(
        ToolCalls([ToolCall("search_messages", {"query": "CANARYPRIV"})]), Reply("ok")
    )
    await collect(engine, asked("what is in here?", SECRET))
    assert "zebra-launch-code" in tool_messages(fake_mistral.requests[-1])[0]["content"]


async def test_an_mcp_servers_tool_answers_while_a_dead_server_is_skipped(
    make_engine, fake_mistral, tmp_path
):
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "calc": {"command": sys.executable, "args": [MCP_FAKE, "stdio"]},
                    "gone": {"command": str(tmp_path / "no-such-server")},
                }
            }
        )
    )
    settings = load_settings({"TEAMBOT_MCP_CONFIG": str(config)})
    servers = McpServers(list(settings.mcp_servers), connect_timeout=5, retry_initial=60)
    engine = await make_engine(tool_sources=[servers])  # starts them, without waiting
    assert await servers.wait_ready(timeout=15)
    assert "calc__add" in engine.tool_names()
    assert not any(name.startswith("gone__") for name in engine.tool_names())
    fake_mistral.enqueue(ToolCalls([ToolCall("calc__add", {"a": 2, "b": 40})]), Reply("It is 42."))
    events = await collect(engine, asked("what is 2 + 40?"))
    done = final(events)
    assert isinstance(done, ReplyDone) and done.tools == ("calc__add",)
    assert tool_messages(fake_mistral.requests[-1])[0]["content"] == "42"
    assert "Asking calc (add)…" in [e.text for e in events if isinstance(e, ToolActivity)]
    names = [t["function"]["name"] for t in fake_mistral.requests[0]["tools"]]
    assert names[:3] == ["search_messages", "read_messages", "current_time"]
    assert "calc__add" in names


async def test_text_written_before_a_call_stays_shown_and_replays(engine, fake_mistral):
    fake_mistral.enqueue(
        ToolCalls([ToolCall("current_time", {})], text="Let me check."),
        Reply("It is daytime."),
        Reply("Noted."),
    )
    events = await collect(engine, asked("is it day?"))
    done = final(events)
    assert isinstance(done, ReplyDone) and done.text == "Let me check.\n\nIt is daytime."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.text
    await collect(engine, asked("ok"))
    replayed = fake_mistral.requests[-1]["messages"]
    calling = next(m for m in replayed if m.get("tool_calls"))
    assert calling["content"] == "Let me check."
    assert replayed[-2] == {"role": "assistant", "content": "It is daytime."}
