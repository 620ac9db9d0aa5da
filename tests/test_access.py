"""Who may use the bot: the policy (bot/access.py), the engine's gate, and each rule on
Discord and Slack with the real clients against the fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from slack_sdk.web.async_client import AsyncWebClient

from adapters.discord.commands import SUMMARIZE_FROM_HERE
from adapters.slack.groups import Groups
from adapters.slack.manifest import SUMMARIZE_THREAD
from adapters.slack.people import Names
from bot import access
from bot.access import NO_DMS, NOT_FOR_YOU, NOT_HERE, Asker, decide, refusal_claim
from bot.config import Settings
from bot.types import Author, ConversationKey, ReplyFailed
from tests.conftest import EngineFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, dc, settle
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.discord.payloads import MANAGE_GUILD
from tests.fakes.mistral import FakeMistral, text_of
from tests.fakes.slack import FakeSlack
from tests.fakes.slack.fixtures import fake_slack_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness
from tests.helpers import ALICE, BOB, collect, key, message, prompt_text
from tests.test_discord_commands import followups
from tests.test_slack_commands import command as slash

pytestmark = pytest.mark.timeout(60)
__all__ = ["dc"]  # fixtures

BOT = "<@UBOT>"


def settings(**values: Any) -> Settings:
    """Settings with sets given as plain sets."""
    frozen: dict[str, Any] = {
        k: frozenset(v) if isinstance(v, set) else v for k, v in values.items()
    }
    return Settings(**frozen)


# The policy


def test_empty_lists_let_everyone_in_everywhere() -> None:
    assert decide(Settings(), Asker("U1", ("C1",)))
    assert decide(Settings(), Asker("U1", ("D1",), is_dm=True))


def test_allowed_users_and_roles_either_is_enough() -> None:
    s = settings(allowed_users={"U1"}, allowed_roles={"R1"})
    assert decide(s, Asker("U1", ("C1",)))
    assert decide(s, Asker("U2", ("C1",), roles=("R9", "R1")))
    refused = decide(s, Asker("U3", ("C1",), roles=("R9",)))
    assert not refused and refused.sentence == NOT_FOR_YOU
    assert "TEAMBOT_ALLOWED_USERS or TEAMBOT_ALLOWED_ROLES" in refused.reason


def test_block_wins_over_allow() -> None:
    s = settings(
        allowed_users={"U1", "U2"},
        blocked_users={"U2"},
        allowed_channels={"CAT", "C2"},
        blocked_channels={"C1", "CAT2"},
    )
    assert decide(s, Asker("U1", ("C3", "CAT")))  # a channel of an allowed category
    assert not decide(s, Asker("U2", ("C3", "CAT")))  # listed, and blocked
    blocked_in_allowed = decide(s, Asker("U1", ("C1", "CAT")))
    allowed_in_blocked = decide(s, Asker("U1", ("C2", "CAT2")))
    assert not blocked_in_allowed and blocked_in_allowed.sentence == NOT_HERE
    assert not allowed_in_blocked and "C" in allowed_in_blocked.reason


def test_channel_allow_list_counts_a_threads_parent_and_category() -> None:
    s = settings(allowed_channels={"CAT"})
    assert decide(s, Asker("U1", ("T1", "C1", "CAT")))
    refused = decide(s, Asker("U1", ("T2", "C2")))
    assert not refused and refused.sentence == NOT_HERE
    assert "T2/C2" in refused.reason


def test_dms_follow_allow_dms_not_the_channel_allow_list() -> None:
    open_dms = settings(allowed_channels={"C1"})
    assert decide(open_dms, Asker("U1", ("D1",), is_dm=True))
    closed = decide(settings(allow_dms=False), Asker("U1", ("D1",), is_dm=True))
    assert not closed and closed.sentence == NO_DMS
    assert not decide(settings(blocked_channels={"D1"}), Asker("U1", ("D1",), is_dm=True))


def test_a_role_list_in_a_dm_without_roles_leaves_the_users_list() -> None:
    s = settings(allowed_users={"U1"}, allowed_roles={"R1"})
    assert decide(s, Asker("U1", ("D1",), is_dm=True))
    assert not decide(s, Asker("U2", ("D2",), is_dm=True))


def test_admins_pass_the_rules_about_people_but_not_blocked_places() -> None:
    s = settings(
        admin_ids={"A1"},
        allowed_users={"U1"},
        blocked_users={"A1", "P1"},
        allowed_roles={"R1"},
        allow_dms=False,
        allowed_channels={"C1"},
        blocked_channels={"C9"},
    )
    for admin in (Asker("A1", ("C1",)), Asker("P1", ("C1",), platform_admin=True)):
        assert decide(s, admin).reason == "admin"
    assert decide(s, Asker("A1", ("D1",), is_dm=True))  # reachable in a DM, always
    assert not decide(s, Asker("A1", ("C9",)))
    assert not decide(s, Asker("P1", ("C2",), platform_admin=True))
    assert access.is_admin(s, "A1") and access.is_admin(s, "X", platform_admin=True)
    assert not access.is_admin(s, "U1")


def test_other_bots_are_not_held_to_the_allow_lists_of_people() -> None:
    s = settings(allowed_users={"U1"}, allowed_roles={"R1"}, blocked_users={"B2"})
    assert decide(s, Asker("B1", ("C1",), is_bot=True))
    assert not decide(s, Asker("B2", ("C1",), is_bot=True))
    assert not decide(settings(blocked_channels={"C1"}), Asker("B1", ("C1",), is_bot=True))


def test_the_refusal_claim_is_per_platform_person_and_local_day() -> None:
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC).timestamp()
    assert refusal_claim("slack", "U1", late, "UTC") == "refused:slack:U1:2026-03-01"
    assert refusal_claim("slack", "U1", late, "Europe/Paris") == "refused:slack:U1:2026-03-02"
    assert refusal_claim("discord", "U1", late + 60, "UTC").endswith("2026-03-01")


# The engine's gate


async def test_a_refused_message_gets_one_reply_a_day_and_is_never_stored(
    make_engine: EngineFactory, fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    db = tmp_path / "gate.db"
    engine = await make_engine(db, blocked_users=frozenset({BOB.id}))
    first = await collect(engine, message("canary-one", author=BOB, is_group=True))
    assert first == [ReplyFailed(NOT_FOR_YOU)]
    assert await collect(engine, message("canary-two", author=BOB, is_group=True)) == []
    assert not await engine.record(message("canary-three", author=BOB, is_group=True))
    # Another process on the same database: the day's reply was already given.
    again = await make_engine(db, blocked_users=frozenset({BOB.id}))
    assert await collect(again, message("canary-four", author=BOB, is_group=True)) == []
    assert fake_mistral.requests == []
    await collect(again, message("what was said?", is_group=True))
    seen = prompt_text(fake_mistral.requests[-1])
    assert "what was said?" in seen and "canary" not in seen


async def test_a_refused_command_answers_one_private_sentence_every_time(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(allowed_users=frozenset({ALICE.id}))
    for _ in range(2):
        refused = await engine.command(key(), BOB, "help", "")
        assert refused.text == NOT_FOR_YOU and refused.private
    assert engine.answers_privately(key(), BOB, "reset", "", is_group=True)
    assert not engine.answers_privately(key(), ALICE, "reset", "", is_group=True)
    assert "Commands:" in (await engine.command(key(), ALICE, "help", "")).text


async def test_platform_admins_run_admin_commands_and_refusals_name_who_may(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    manager = Author("U7", "Manager", platform_admin=True)
    assert engine.is_admin(manager) and not engine.is_admin(ALICE)
    ok = await engine.command(key(), manager, "system", "be terse")
    assert ok.text == "Instructions set for this conversation."
    discord = await engine.command(ConversationKey("discord", "G", "C1"), ALICE, "system", "x")
    slack = await engine.command(ConversationKey("slack", "T", "C1"), ALICE, "system", "x")
    assert discord.private and "TEAMBOT_ADMIN_IDS" in discord.text
    assert "Manage Server" in discord.text
    assert "workspace admins and owners" in slack.text and "TEAMBOT_ADMIN_IDS" in slack.text


# Discord: the real discord.py client against FakeDiscord

DiscordStarter = Callable[..., Awaitable[Running]]


@pytest_asyncio.fixture
async def discord_bot(make_engine: EngineFactory, dc: FakeDiscord) -> AsyncIterator[DiscordStarter]:
    """Start the adapter with an engine built from these settings (one at a time)."""
    running: list[Running] = []

    async def start(db: Path | None = None, **overrides: Any) -> Running:
        if running:
            await running.pop().stop()
        bot = await start_adapter(await make_engine(db, **overrides), dc)
        running.append(bot)
        return bot

    yield start
    for bot in running:
        await bot.stop()


async def silence(dc: FakeDiscord, msg: dict[str, Any]) -> None:
    await settle()
    assert dc.replies_to(msg["id"]) == []


async def test_discord_allow_list_refuses_once_a_day_even_after_a_restart(
    discord_bot: DiscordStarter, dc: FakeDiscord, fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    db = tmp_path / "discord.db"
    bot = await discord_bot(db, allowed_users=frozenset({dc.alice}))
    refused = await dc.user_message(dc.general, dc.bob, "canary alpha", mention=True)
    assert await answer_to(bot, dc, refused) == NOT_FOR_YOU
    await silence(dc, await dc.user_message(dc.general, dc.bob, "canary beta", mention=True))
    await dc.user_message(dc.general, dc.bob, "canary gamma, just chatting")
    bot = await discord_bot(db, allowed_users=frozenset({dc.alice}))  # a new process
    await silence(dc, await dc.user_message(dc.general, dc.bob, "canary delta", mention=True))
    assert fake_mistral.requests == []
    ask = await dc.user_message(dc.general, dc.alice, "what did bob say?", mention=True)
    assert "what did bob say?" in await answer_to(bot, dc, ask)
    assert "canary" not in prompt_text(fake_mistral.requests[-1])


async def test_discord_block_wins_over_allow(
    discord_bot: DiscordStarter, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    bot = await discord_bot(
        allowed_users=frozenset({dc.alice, dc.bob}), blocked_users=frozenset({dc.bob})
    )
    refused = await dc.user_message(dc.general, dc.bob, "hello", mention=True)
    assert await answer_to(bot, dc, refused) == NOT_FOR_YOU
    allowed = await dc.user_message(dc.general, dc.alice, "hello", mention=True)
    assert await answer_to(bot, dc, allowed) == "echo: [alice]: hello"
    assert len(fake_mistral.requests) == 1


async def test_discord_roles_and_a_dm_without_roles(
    discord_bot: DiscordStarter, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    engineers = dc.add_role("engineers")
    dc.add_role("guests")
    dc.give_role(dc.alice, engineers)
    bot = await discord_bot(allowed_roles=frozenset({engineers}))
    ok = await dc.user_message(dc.general, dc.alice, "with role", mention=True)
    assert await answer_to(bot, dc, ok) == "echo: [alice]: with role"
    refused = await dc.user_message(dc.general, dc.bob, "without", mention=True)
    assert await answer_to(bot, dc, refused) == NOT_FOR_YOU
    # A DM carries no roles: only TEAMBOT_ALLOWED_USERS (or being an admin) lets one in.
    dm = await dc.user_message(dc.dm(dc.alice), dc.alice, "in private")
    assert await answer_to(bot, dc, dm) == NOT_FOR_YOU
    assert len(fake_mistral.requests) == 1


async def test_discord_category_allows_its_channels_and_their_threads(
    discord_bot: DiscordStarter, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    projects = dc.add_category("projects")
    alpha = dc.add_channel("alpha", category=projects)
    design = dc.add_thread("alpha", "alpha-design")
    bot = await discord_bot(allowed_channels=frozenset({projects}))
    in_channel = await dc.user_message(alpha, dc.alice, "in alpha", mention=True)
    assert await answer_to(bot, dc, in_channel) == "echo: [alice]: in alpha"
    in_thread = await dc.user_message(design, dc.bob, "in its thread", mention=True)
    assert await answer_to(bot, dc, in_thread) == "echo: [bob]: in its thread"
    elsewhere = await dc.user_message(dc.general, dc.owner_id, "in general", mention=True)
    assert await answer_to(bot, dc, elsewhere) == NOT_HERE  # the owner too: a place rule
    await dc.user_message(dc.general, dc.alice, "general chatter canary")
    await settle()
    again = await dc.user_message(alpha, dc.alice, "anything else?", mention=True)
    await answer_to(bot, dc, again)
    assert "canary" not in prompt_text(fake_mistral.requests[-1])


async def test_discord_dms_off_except_for_admins(
    discord_bot: DiscordStarter, dc: FakeDiscord
) -> None:
    bot = await discord_bot(allow_dms=False, admin_ids=frozenset({dc.alice}))
    refused = await dc.user_message(dc.dm(dc.bob), dc.bob, "psst")
    assert await answer_to(bot, dc, refused) == NO_DMS
    admin = await dc.user_message(dc.dm(dc.alice), dc.alice, "psst")
    assert await answer_to(bot, dc, admin) == "echo: psst"
    channel = await dc.user_message(dc.general, dc.bob, "out loud", mention=True)
    assert await answer_to(bot, dc, channel) == "echo: [bob]: out loud"


async def test_discord_refused_slash_commands_answer_privately_every_time(
    discord_bot: DiscordStarter, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    bot = await discord_bot(blocked_users=frozenset({dc.bob}))
    for _ in range(2):
        usage = await dc.slash("usage", user_id=dc.bob, channel_id=dc.general)
        [answer] = await followups(bot, dc, usage)
        assert answer.ephemeral and answer.content == NOT_FOR_YOU
    ask = await dc.slash("ask", {"prompt": "hi"}, user_id=dc.bob, channel_id=dc.general)
    [answer] = await followups(bot, dc, ask)
    assert answer.ephemeral and answer.content == NOT_FOR_YOU
    assert ask.deferred_ephemeral
    reset = await dc.slash("reset", user_id=dc.bob, channel_id=dc.general)
    [answer] = await followups(bot, dc, reset)
    assert answer.ephemeral and reset.deferred_ephemeral  # refused: private from the start
    note = await dc.user_message(dc.general, dc.alice, "a note")
    menu = await dc.message_command(
        SUMMARIZE_FROM_HERE, note["id"], user_id=dc.bob, channel_id=dc.general
    )
    [answer] = await followups(bot, dc, menu)
    assert answer.ephemeral and answer.content == NOT_FOR_YOU
    assert fake_mistral.requests == []


async def test_discord_manage_server_makes_an_admin(
    discord_bot: DiscordStarter, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    managers = dc.add_role("managers", MANAGE_GUILD)
    dc.give_role(dc.bob, managers)
    bot = await discord_bot(allowed_users=frozenset({dc.alice}))
    refused = await dc.slash(
        "system", {"text": "be a pirate"}, user_id=dc.alice, channel_id=dc.general
    )
    [answer] = await followups(bot, dc, refused)
    assert answer.ephemeral and answer.content.startswith("Only admins")
    assert "TEAMBOT_ADMIN_IDS" in answer.content and "Manage Server" in answer.content
    done = await dc.slash("system", {"text": "be a pirate"}, user_id=dc.bob, channel_id=dc.general)
    [answer] = await followups(bot, dc, done)
    assert not answer.ephemeral and answer.content == "Instructions set for this conversation."
    # Not on the allow list, but an admin: answered.
    ask = await dc.user_message(dc.general, dc.bob, "arr?", mention=True)
    assert await answer_to(bot, dc, ask) == "echo: [bob]: arr?"
    assert "be a pirate" in fake_mistral.requests[-1]["messages"][0]["content"]


# Slack: the real slack-bolt app against FakeSlack

SlackStarter = Callable[..., Awaitable[Harness]]


@pytest_asyncio.fixture
async def slack_bot(
    make_engine: EngineFactory, fake_slack: FakeSlack
) -> AsyncIterator[SlackStarter]:
    """Start the adapter with an engine built from these settings (a restart if running)."""
    harness: Harness | None = None

    async def start(db: Path | None = None, **overrides: Any) -> Harness:
        nonlocal harness
        engine = await make_engine(db, **overrides)
        if harness is None:
            harness = Harness(fake_slack, engine)
        else:
            await harness.stop()
        await harness.start(engine)
        return harness

    yield start
    if harness is not None:
        await harness.stop()


def slack_prompt(fake: FakeMistral) -> str:
    return "\n".join(text_of(m["content"]) for m in fake.requests[-1]["messages"])


async def test_slack_block_list_refuses_once_a_day_even_after_a_restart(
    slack_bot: SlackStarter, fake_slack: FakeSlack, fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    db = tmp_path / "slack.db"
    blocked = {"blocked_users": frozenset({"U2"})}
    slack = await slack_bot(db, **blocked)
    first = fake_slack.user_message("U2", "C1", f"{BOT} canary one")
    assert await slack.reply_in("C1", first) == NOT_FOR_YOU
    second = fake_slack.user_message("U2", "C1", f"{BOT} canary two")
    fake_slack.user_message("U2", "C1", "canary three, chatter")
    await slack.idle()
    assert slack.replies("C1", second) == []
    slack = await slack_bot(db, **blocked)  # a new process
    third = fake_slack.user_message("U2", "C1", f"{BOT} canary four")
    await slack.idle()
    assert slack.replies("C1", third) == []
    assert fake_mistral.requests == []
    ask = fake_slack.user_message("U1", "C1", f"{BOT} what did Bob say?")
    await slack.reply_in("C1", ask)
    assert "canary" not in slack_prompt(fake_mistral)


async def test_slack_allow_list_and_block_wins(
    slack_bot: SlackStarter, fake_slack: FakeSlack, fake_mistral: FakeMistral
) -> None:
    slack = await slack_bot(allowed_users=frozenset({"U1", "U2"}), blocked_users=frozenset({"U2"}))
    for user in ("U2", "U3"):
        ts = fake_slack.user_message(user, "C1", f"{BOT} hi")
        assert await slack.reply_in("C1", ts) == NOT_FOR_YOU
    ts = fake_slack.user_message("U1", "C1", f"{BOT} hi")
    assert await slack.reply_in("C1", ts) == "echo: [Alice]: hi"
    assert len(fake_mistral.requests) == 1
    assert fake_slack.count("usergroups.list") == 0  # no role list, no lookups


async def test_slack_user_groups_are_roles_in_channels_and_dms(
    slack_bot: SlackStarter, fake_slack: FakeSlack, fake_mistral: FakeMistral
) -> None:
    engineers = fake_slack.add_usergroup("engineers", ["U1"])
    disabled = fake_slack.add_usergroup("old-team", ["U2"], disabled=True)
    slack = await slack_bot(allowed_roles=frozenset({engineers, disabled}))
    ts = fake_slack.user_message("U1", "C1", f"{BOT} in the channel")
    assert await slack.reply_in("C1", ts) == "echo: [Alice]: in the channel"
    dm = fake_slack.user_message("U1", "D1", "in a DM")
    assert await slack.reply_in("D1", dm) == "echo: in a DM"  # groups are workspace-wide
    ts = fake_slack.user_message("U2", "C1", f"{BOT} me too?")
    assert await slack.reply_in("C1", ts) == NOT_FOR_YOU
    assert len(fake_mistral.requests) == 2
    assert fake_slack.count("usergroups.list") == 1  # cached
    [call] = [c for c in fake_slack.calls if c.method == "usergroups.list"]
    assert str(call.args.get("include_users")).lower() in ("1", "true")


async def test_slack_channel_allow_list_and_dms_off(
    slack_bot: SlackStarter, fake_slack: FakeSlack, fake_mistral: FakeMistral
) -> None:
    slack = await slack_bot(allowed_channels=frozenset({"C1"}), allow_dms=False)
    ts = fake_slack.user_message("U1", "C2", f"{BOT} over here?")
    assert await slack.reply_in("C2", ts) == NOT_HERE
    dm = fake_slack.user_message("U2", "D2", "privately?")
    assert await slack.reply_in("D2", dm) == NO_DMS
    ts = fake_slack.user_message("U1", "C1", f"{BOT} and here?")
    assert await slack.reply_in("C1", ts) == "echo: [Alice]: and here?"
    assert len(fake_mistral.requests) == 1


async def test_slack_refused_slash_commands_are_private_and_post_nothing(
    slack_bot: SlackStarter, fake_slack: FakeSlack, fake_mistral: FakeMistral
) -> None:
    slack = await slack_bot(allowed_users=frozenset({"U1"}))
    for name, text in (("/usage", ""), ("/ask", "a question"), ("/ask", "again")):
        reply = await slash(slack, name, text, user="U2")
        assert reply["response_type"] == "ephemeral" and reply["text"] == NOT_FOR_YOU
    root = fake_slack.user_message("U1", "C1", "a thread to summarise")
    await slack.idle()
    before = len(fake_slack.responses)
    fake_slack.message_shortcut(SUMMARIZE_THREAD, "U2", "C1", root)
    await slack.wait_for(lambda: len(fake_slack.responses) > before, "the shortcut's answer")
    [shortcut] = fake_slack.responses[before:]
    assert shortcut["response_type"] == "ephemeral" and shortcut["text"] == NOT_FOR_YOU
    await slack.idle()
    assert fake_slack.bot_messages("C1", None) == fake_slack.bot_messages("C1", root) == []
    assert fake_mistral.requests == []


async def test_slack_workspace_admins_run_admin_commands(
    slack_bot: SlackStarter, fake_slack: FakeSlack, fake_mistral: FakeMistral
) -> None:
    fake_slack.admins.add("U2")
    slack = await slack_bot(allowed_users=frozenset({"U1"}))
    refused = await slash(slack, "/system", "talk like a pirate", user="U1")
    assert refused["response_type"] == "ephemeral"
    assert refused["text"].startswith("Only admins") and "TEAMBOT_ADMIN_IDS" in refused["text"]
    assert "workspace admins and owners" in refused["text"]
    accepted = await slash(slack, "/system", "talk like a pirate", user="U2")
    assert accepted["text"] == "Instructions set for this conversation."
    # U2 is not on the allow list, but admins pass the rules about people.
    ts = fake_slack.user_message("U2", "C1", f"{BOT} ahoy")
    assert await slack.reply_in("C1", ts) == "echo: [Bob]: ahoy"
    assert "pirate" in text_of(fake_mistral.requests[-1]["messages"][0]["content"])


async def test_slack_lookups_user_groups_once_and_admin_flags_with_the_name() -> None:
    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        fake.owners.add("U3")
        names = Names(client)
        assert [await names.is_admin(u) for u in ("U1", "U3")] == [False, True]
        assert await names.get("U3") == "Carol"
        assert fake.count("users.info") == 2  # the name and the flag from one lookup each
        group = fake.add_usergroup("eng", ["U1", "U2"])
        fake.fail_next("usergroups.list", error="missing_scope")
        groups = Groups(client)
        assert await groups.of("U1") == ()  # without the scope: no roles, fewer people in
        assert await groups.of("U2") == ()
        assert fake.count("usergroups.list") == 1  # not asked again per message
        fresh = Groups(client)
        results = await asyncio.gather(*(fresh.of(u) for u in ("U1", "U2", "U3")))
        assert results == [(group,), (group,), ()]
        assert fake.count("usergroups.list") == 2  # one call for everyone at once
