"""The command registry: one declaration per command, every platform's view derived from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.discord.commands import install
from adapters.discord.delivery import scheduler
from adapters.slack.manifest import SHORTCUTS, manifest
from adapters.slack.slash import COMMANDS
from bot.commands import REGISTRY
from bot.types import Author, ConversationKey
from tests.helpers import ALICE, BOB

ROOT = Path(__file__).parent.parent


def at(platform: str, channel: str = "C1") -> ConversationKey:
    return ConversationKey(platform, "T1", channel)


async def test_slack_help_lists_every_slack_command_as_typed(engine) -> None:
    text = (await engine.command(at("slack"), ALICE, "help", "")).text
    listed = re.findall(r"^• `(/\w+)", text, re.MULTILINE)
    assert listed == [
        "/ask",
        "/reset",
        "/forget",
        "/reasoning",
        "/system",
        "/summarize",
        "/limits",
        "/digest",
        "/tools",
        "/listen",
        "/usage",
        "/help",
    ]
    assert "`/system clear`" in text and "`reset`" not in text


async def test_discord_help_offers_ask_and_console_help_does_not(engine) -> None:
    discord = (await engine.command(at("discord"), ALICE, "help", "")).text
    console = (await engine.command(at("console"), ALICE, "help", "")).text
    assert "• `/ask <question>`" in discord and "Mention me in a channel" in discord
    assert "/ask" not in console and "• `/reset`" in console and "/quit" in console


async def test_console_cannot_run_ask_and_unknown_commands_are_named(engine) -> None:
    ask = await engine.command(at("console"), ALICE, "ask", "hi")
    unknown = await engine.command(at("console"), ALICE, "frobnicate", "")
    assert ask.private and "`ask`" in ask.text
    assert unknown.private and "`frobnicate`" in unknown.text and "/help" in unknown.text


async def test_privacy_is_known_before_running_and_matches_the_result(make_engine) -> None:
    engine = await make_engine(admin_ids=frozenset({"U1"}))
    cases = [
        ("usage", "", ALICE, True),
        ("help", "", BOB, True),
        ("reset", "", BOB, False),
        ("system", "", BOB, True),  # showing the instructions
        ("system", "be brief", BOB, True),  # refused: not an admin
        ("system", "be brief", ALICE, False),  # set, for everyone to see
        ("reasoning", "on", BOB, False),
    ]
    for name, args, author, private in cases:
        key = at("discord")
        before = engine.answers_privately(key, author, name, args, is_group=True)
        result = await engine.command(key, author, name, args)
        assert (before, result.private) == (private, private), (name, args, author)


async def test_system_refusal_names_who_may_change_it(make_engine) -> None:
    engine = await make_engine(admin_ids=frozenset({"U1"}))
    refused = await engine.command(at("slack"), BOB, "system", "talk like a pirate")
    assert "Only admins" in refused.text and "TEAMBOT_ADMIN_IDS" in refused.text
    # In a DM with the bot the person is in charge of their own conversation.
    dm = ConversationKey("slack", "T1", "D1")
    allowed = await engine.command(dm, BOB, "system", "talk like a pirate", is_group=False)
    assert allowed.text == "Instructions set for this conversation."


def test_manifest_file_is_the_generated_manifest() -> None:
    assert (ROOT / "slack-manifest.yml").read_text() == manifest()
    declared = re.findall(r"^\s+- command: (/\w+)$", manifest(), re.MULTILINE)
    assert declared == list(COMMANDS) == [f"/{c.name}" for c in REGISTRY.on("slack")]
    shortcuts = re.findall(r"^\s+callback_id: (\w+)$", manifest(), re.MULTILINE)
    assert (
        shortcuts == [s.callback_id for s in SHORTCUTS] == ["summarize_thread", "ask_about_message"]
    )
    assert all(len(s.name) <= 24 and len(s.description) <= 150 for s in SHORTCUTS)
    assert "  interactivity:\n    is_enabled: true" in manifest()  # shortcuts need it


def test_manifest_descriptions_fit_slack_and_discord() -> None:
    for command in REGISTRY.commands.values():
        assert 0 < len(command.summary) <= 100, command.name
        assert all(len(o.description) <= 100 for o in command.options), command.name


def test_teambot_manifest_slack_prints_it() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "bot.cli", "manifest", "slack"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert printed == manifest()


def test_discord_tree_is_built_from_the_registry() -> None:
    import discord
    from discord import app_commands

    client = discord.Client(intents=discord.Intents.none())
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    install(tree, engine=None, pacer=scheduler())  # type: ignore[arg-type]
    slash = tree.get_commands(type=discord.AppCommandType.chat_input)
    built = {c.name: c.to_dict(tree) for c in slash}
    assert list(built) == [c.name for c in REGISTRY.on("discord")]
    menus = tree.get_commands(type=discord.AppCommandType.message)
    assert [menu.name for menu in menus] == ["Summarize from here", "Ask teambot"]
    ask = {o["name"]: o for o in built["ask"]["options"]}
    assert ask["prompt"]["required"] and ask["prompt"]["type"] == 3  # string
    assert ask["image"]["type"] == 11 and not ask["image"].get("required")  # attachment
    assert ask["reasoning"]["type"] == 5  # boolean
    [mode] = built["reasoning"]["options"]
    assert [c["value"] for c in mode["choices"]] == ["on", "off", "show"]
    assert built["usage"]["description"] == REGISTRY.commands["usage"].summary


@pytest.mark.parametrize("platform", ["discord", "slack", "console"])
async def test_every_listed_command_runs_or_is_ask(engine, platform: str) -> None:
    author = Author("U9", "Nine")
    for command in REGISTRY.on(platform):
        result = await engine.command(at(platform), author, command.name, "", is_group=False)
        if command.handler is None:
            assert "don't know" in result.text
        else:
            assert "don't know" not in result.text and result.text
