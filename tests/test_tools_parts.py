"""The tool loop's parts without a model: replay of stored rounds, running calls, links."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters.discord.links import DiscordLinks
from adapters.slack.links import SlackLinks
from bot import tokens
from bot.config import ConfigError, load_settings
from bot.context import merge_turns, turn
from bot.delivery.compose import Style, View, tools_footer
from bot.model import ToolCall
from bot.store import Scope, StoredMessage
from bot.tools import ToolContext, ToolError, ToolSpec, rounds
from bot.tools.loop import cap, run_call, run_round
from bot.types import ConversationKey, Message, ReplyDone
from tests.helpers import ALICE


def stored(role: str, text: str, row_id: int, raw_rounds: str = "") -> StoredMessage:
    return StoredMessage(row_id, "c", role, "U1", "Alice", text, 1, 0.0, rounds=raw_rounds)


ROUND = rounds.Round(
    calls=(ToolCall("abcDEF123", "search_messages", '{"query":"release"}'),),
    results=("1 message found",),
)


def test_rounds_survive_the_store_byte_for_byte():
    raw = rounds.dumps([ROUND, rounds.Round((ToolCall("x", "t", "{}"),), ("ok",), "Let me look")])
    again = rounds.loads(raw)
    assert rounds.dumps(again) == raw
    assert again[1].text == "Let me look"
    assert rounds.loads("not json") == ()
    assert rounds.loads("") == ()


def test_an_answer_with_rounds_replays_calls_then_results_then_text():
    turns = [
        ("user", turn(stored("user", "when is the release?", 1), named=False)),
        ("assistant", turn(stored("assistant", "Friday.", 2, rounds.dumps([ROUND])), False)),
        ("user", turn(stored("user", "thanks", 3), named=False)),
    ]
    messages = merge_turns(turns)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    call = messages[1]["tool_calls"][0]
    assert call == {
        "id": "abcDEF123",
        "type": "function",
        "function": {"name": "search_messages", "arguments": '{"query":"release"}'},
    }
    assert messages[2] == {
        "role": "tool",
        "tool_call_id": "abcDEF123",
        "name": "search_messages",
        "content": "1 message found",
    }
    assert messages[3]["content"] == "Friday."


def test_a_window_opening_on_an_answer_with_rounds_drops_all_of_it():
    turns = [
        ("assistant", turn(stored("assistant", "Friday.", 2, rounds.dumps([ROUND])), False)),
        ("user", turn(stored("user", "and then?", 3), named=False)),
    ]
    assert merge_turns(turns) == [{"role": "user", "content": "and then?"}]


def test_an_answer_right_after_an_answer_joins_the_tool_call_turn():
    turns = [
        ("user", "q"),
        ("assistant", "first answer"),
        ("assistant", turn(stored("assistant", "second", 2, rounds.dumps([ROUND])), False)),
    ]
    messages = merge_turns(turns)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["content"] == "first answer" and messages[1]["tool_calls"]


class Echo:
    spec = ToolSpec("echo", "Echo", {"type": "object"})

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour

    def activity(self, args: dict[str, Any], ctx: ToolContext) -> str:
        return "Echoing…"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        if self.behaviour == "tool-error":
            raise ToolError("nothing there")
        if self.behaviour == "crash":
            raise RuntimeError("secret detail")
        if self.behaviour == "hang":
            await asyncio.sleep(60)
        if self.behaviour == "garbage":
            return {"not": "a string"}
        if self.behaviour == "huge":
            return "word " * 50_000
        return json.dumps(args)


CTX = ToolContext(
    Message(ConversationKey("test", "T1", "C1"), "m1", ALICE, "q"),
    Scope("test", "test:T1:C1"),
    store=None,  # type: ignore[arg-type]  # these tools never read it
    timezone="UTC",
)


async def run(behaviour: str, arguments: str = '{"a": 1}', name: str = "echo") -> str:
    return await run_call(
        ToolCall("id1", name, arguments), {"echo": Echo(behaviour)}.get(name), CTX, 0.2
    )


async def test_every_kind_of_failure_becomes_an_error_result(caplog):
    assert await run("ok") == '{"a": 1}'
    assert await run("ok", "{bad json") == "Error: the arguments are not valid JSON."
    assert await run("ok", "[1, 2]") == "Error: the arguments must be a JSON object."
    assert await run("ok", name="nope") == "Error: there is no tool named 'nope'."
    assert await run("tool-error") == "Error: nothing there"
    assert await run("crash") == "Error: echo failed (RuntimeError)."
    assert await run("hang") == "Error: echo took longer than 0.2 s and was stopped."
    assert await run("garbage") == "{'not': 'a string'}"
    logged = [r for r in caplog.records if r.name == "teambot.tools"]
    assert (
        len([r for r in logged if "crash" in r.getMessage() or "RuntimeError" in r.getMessage()])
        == 1
    )


async def test_results_are_capped_to_their_share_of_the_room():
    calls = [ToolCall(f"id{i}", "echo", "{}") for i in range(2)]
    results = await run_round(calls, {"echo": Echo("huge")}, CTX, seconds=1, room=1000)
    for result in results:
        assert "[truncated:" in result
        assert tokens.count(result) <= 500 + 40  # its share, plus the marker
    assert cap("short", 10) == "short"


def test_footer_names_tools_once_with_counts():
    assert tools_footer(("search_messages", "current_time", "search_messages")) == (
        "🔧 search_messages ×2, current_time"
    )
    assert tools_footer(("github__issues",)) == "🔧 github/issues"
    view = View()
    view.finish(ReplyDone("Friday.", tools=("search_messages",)))
    assert view.text(Style(2000, "*", note_prefix="-# ")) == "Friday.\n\n-# 🔧 search_messages"
    assert view.text(Style(2000, "_")) == "Friday.\n\n_🔧 search_messages_"


def test_discord_links_round_trip():
    links = DiscordLinks()
    url = links.permalink("discord:111:222:", "333")
    assert url == "https://discord.com/channels/111/222/333"
    assert links.parse(url) == ("discord:111:", "333")
    assert (
        links.permalink("discord:111:222:444", "555") == "https://discord.com/channels/111/444/555"
    )
    assert links.permalink("discord::777:", "888") == "https://discord.com/channels/@me/777/888"
    assert links.parse("https://discord.com/channels/@me/777/888") == ("discord::777:", "888")
    assert links.parse("https://evil.example/channels/1/2/3") is None
    assert links.permalink("discord:1:2:", "i999") is None  # a slash command's question


def test_slack_links_round_trip():
    links = SlackLinks("T1", "https://acme.slack.com/")
    url = links.permalink("slack:T1:C1:", "1712345678.123456")
    assert url == "https://acme.slack.com/archives/C1/p1712345678123456"
    assert links.parse(url) == ("slack:T1:C1:", "1712345678.123456")
    reply = links.permalink("slack:T1:C1:1712345600.000100", "1712345678.123456")
    assert reply == (
        "https://acme.slack.com/archives/C1/p1712345678123456?thread_ts=1712345600.000100&cid=C1"
    )
    assert links.parse(reply) == ("slack:T1:C1:", "1712345678.123456")
    assert links.parse("https://acme.slack.com/team/U1") is None
    assert SlackLinks("T1", "").permalink("slack:T1:C1:", "1.2") is None


def test_tool_settings():
    assert load_settings({}).tools == ("search_messages", "read_messages", "current_time")
    assert load_settings({"TEAMBOT_TOOLS": "none"}).tools == ()
    assert load_settings({"TEAMBOT_TOOLS": "current_time"}).tools == ("current_time",)
    for name, value in [
        ("TEAMBOT_TOOLS", "rm_rf"),
        ("TEAMBOT_TIMEZONE", "Mars/Olympus"),
        ("TEAMBOT_TOOL_ROUNDS", "0"),
        ("TEAMBOT_TOOL_TIMEOUT", "soon"),
        ("TEAMBOT_MCP_CONFIG", "/nonexistent.json"),
    ]:
        with pytest.raises(ConfigError) as raised:
            load_settings({name: value})
        assert raised.value.variable == name
