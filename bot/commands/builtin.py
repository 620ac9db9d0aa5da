"""teambot's commands: each declared once, with its handler."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

from bot.commands import limits
from bot.commands.registry import (
    CHAT_PLATFORMS,
    Call,
    Command,
    Kind,
    Option,
    Registry,
    Who,
)
from bot.digests import DEFAULT_TIME, parse_clock
from bot.model import capabilities_of
from bot.store import UsageTotals
from bot.text import usd
from bot.types import CommandResult, ConversationKey

DAY = 86_400.0
REASONING_MODES = ("on", "off", "show")

REGISTRY = Registry(
    intro={
        "discord": "**teambot** answers with Mistral Small 4. Mention me in a channel, "
        "reply to me, or DM me.",
        "slack": "**teambot** answers with Mistral Small 4. Mention me in a channel and I "
        "answer in a thread (and keep answering there without a mention), or DM me.",
        "console": "**teambot** answers with Mistral Small 4. Type a message to ask; "
        "`/quit` leaves.",
        "": "**teambot** answers with Mistral Small 4. Mention me in a channel, "
        "reply to me, or DM me.",
    },
    outro="Start a message with `think:` to have me reason carefully about that one message.\n"
    "I can search what this team wrote (where you can read it) and cite it with links.\n"
    "I see images and text files you attach. Replies never ping anyone.",
)


async def _help(call: Call) -> CommandResult:
    return CommandResult(REGISTRY.help(call.key.platform))


async def _reset(call: Call) -> CommandResult:
    count = await call.services.forget(call.key)
    noun = "message" if count == 1 else "messages"
    return CommandResult(f"Forgot this conversation ({count} {noun}). Starting fresh.")


PLATFORM_NAMES = {"discord": "Discord", "slack": "Slack", "console": "the console"}
CONFIRM = "confirm"


async def _forget(call: Call) -> CommandResult:
    platform = PLATFORM_NAMES.get(call.key.platform, call.key.platform)
    if call.args.lower() != CONFIRM:
        return CommandResult(
            f"`forget` deletes every message you wrote that I stored on {platform}, in every "
            "conversation, and your DM with me; it cannot be undone. Usage records stay, "
            f"without your name. To go ahead, run `forget {CONFIRM}`.",
            True,
        )
    count = await call.services.forget_user(call)
    noun = "message" if count == 1 else "messages"
    return CommandResult(
        f"Forgot {count} {noun} you wrote here on {platform}, and your DM with me. "
        "Usage records stay, without your name.",
        True,
    )


def _where(call: Call) -> str:
    return f"in {call.key}"


REASONING_MEANING = {
    "on": "I'll think before answering here (slower, better on hard questions).",
    "off": "I'll answer directly here without extended thinking.",
    "show": "I'll think before answering here and show my thinking with each answer.",
}


async def _reasoning(call: Call) -> CommandResult:
    choice = call.args.lower()
    if not choice:
        current = (await call.services.conversation_settings(call.key)).reasoning
        if current is None:
            current = "on" if call.services.settings.reasoning else "off"
        return CommandResult(f"Reasoning here is **{current}**. Use `reasoning on|off|show`.")
    if choice not in REASONING_MODES:
        return CommandResult("Use `reasoning on`, `reasoning off` or `reasoning show`.", True)
    can = capabilities_of(call.services.model)
    if choice != "off" and not can.reasoning:
        return CommandResult(
            f"This bot's model provider ({can.provider}) does not support reasoning, "
            "so I always answer directly.",
            True,
        )
    await call.services.set_setting(call.key, "reasoning", choice)
    return CommandResult(f"Reasoning **{choice}**. {REASONING_MEANING[choice]}")


async def _system(call: Call) -> CommandResult:
    if not call.args:
        current = (await call.services.conversation_settings(call.key)).system
        if not current:
            return CommandResult("No instructions are set for this conversation.")
        return CommandResult(f"Instructions for this conversation:\n{current}")
    if call.args.lower() == "clear":
        await call.services.set_setting(call.key, "system", None)
        await call.services.audit(call, "system", f"cleared {_where(call)}")
        return CommandResult("Instructions cleared for this conversation.")
    await call.services.set_setting(call.key, "system", call.args)
    shown = call.args if len(call.args) <= 100 else call.args[:99] + "…"
    detail = f"set ({len(call.args)} chars) {_where(call)}: {shown}"
    await call.services.audit(call, "system", detail)
    return CommandResult("Instructions set for this conversation.")


TOOL_MODES = ("on", "off")


async def _tools(call: Call) -> CommandResult:
    choice = call.args.lower()
    names = call.services.tool_names()
    if choice not in ("", *TOOL_MODES):
        return CommandResult("Use `tools on` or `tools off`.", True)
    if choice:
        await call.services.set_setting(call.key, "tools", choice)
        await call.services.audit(call, "tools", f"{choice} {_where(call)}")
    current = (await call.services.conversation_settings(call.key)).tools or "on"
    if not names:
        return CommandResult("This bot has no tools (TEAMBOT_TOOLS=none).")
    listed = ", ".join(f"`{name}`" for name in names)
    if current == "off":
        return CommandResult("Tools are **off** here; I answer from this conversation only.")
    return CommandResult(
        f"Tools are **on** here: {listed}. I can search what this team wrote where you can "
        "read it, and cite it with links."
    )


LISTEN_MODES = ("on", "off")


async def _listen(call: Call) -> CommandResult:
    choice = call.args.lower()
    if choice not in ("", *LISTEN_MODES):
        return CommandResult("Use `listen on` or `listen off`.", True)
    if not call.is_group:
        return CommandResult("In a DM I answer every message anyway; `listen` is for channels.")
    # The channel's setting, wherever it is typed: its threads listen with it.
    channel = ConversationKey(call.key.platform, call.key.space, call.key.channel)
    if choice:
        await call.services.set_setting(channel, "listen", "on" if choice == "on" else None)
        await call.services.audit(call, "listen", f"{choice} in {channel}")
    on = (await call.services.conversation_settings(channel)).listen == "on"
    if on:
        return CommandResult(
            "Listening is **on** in this channel: I answer every message here and in its "
            "threads, no mention needed."
        )
    return CommandResult("Listening is **off** in this channel: mention me to ask.")


def _listen_is_private(call: Call) -> bool:
    return not call.args or not Command.allowed(LISTEN, call)


def _wants_private(call: Call) -> bool:
    return call.args.lower().split()[-1:] == ["private"]


async def _summarize(call: Call) -> CommandResult:
    private = _wants_private(call)
    if private:
        call = dataclasses.replace(
            call, args=call.args[: call.args.lower().rfind("private")].strip()
        )
    return CommandResult(await call.services.summarize(call), private)


async def _digest(call: Call) -> CommandResult:
    words = call.args.lower().split()
    key = call.key
    if not call.is_group or key.thread:
        return CommandResult("Daily digests are for channels; use this in the channel.", True)
    current = (await call.services.conversation_settings(key)).digest
    zone = call.services.settings.timezone
    if not words:
        if current is None:
            return CommandResult("No daily digest here. `digest on [HH:MM]` starts one.")
        return CommandResult(
            f"A digest of the last 24 hours is posted here daily at {current} ({zone})."
        )
    if words == ["off"]:
        await call.services.set_setting(key, "digest", None)
        await call.services.audit(call, "digest", f"off {_where(call)}")
        return CommandResult("Daily digest **off** here.")
    at = parse_clock(words[1]) if words[0] == "on" and len(words) == 2 else None
    if words == ["on"]:
        at = DEFAULT_TIME
    if words[0] != "on" or at is None:
        return CommandResult("Use `digest on`, `digest on 17:30` or `digest off`.", True)
    await call.services.set_setting(key, "digest", at)
    await call.services.audit(call, "digest", f"on {at} {_where(call)}")
    return CommandResult(
        f"Daily digest **on**: every day at {at} ({zone}) I post a summary of the last 24 hours "
        "here, unless nothing happened."
    )


def _digest_is_private(call: Call) -> bool:
    return not call.args or not Command.allowed(DIGEST, call)


def _tools_is_private(call: Call) -> bool:
    return not call.args or not Command.allowed(TOOLS, call)


def _line(label: str, totals: UsageTotals) -> str:
    # A reply that used tools is several model calls; each is billed, so each is counted.
    calls = f"{totals.calls:,} model {'call' if totals.calls == 1 else 'calls'}"
    return (
        f"• {label}: {calls}, {totals.prompt_tokens:,} tokens in / "
        f"{totals.completion_tokens:,} out, ${usd(totals.cost_usd)}"
    )


async def _usage(call: Call) -> CommandResult:
    now = time.time()
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    totals = call.services.usage_totals
    lines = [
        f"Usage of {call.services.settings.model} ($0.15 in / $0.60 out per million tokens):",
        _line("You, last 30 days", await totals(since=now - 30 * DAY, user_id=call.author.id)),
        _line("This conversation", await totals(key=call.key)),
        _line("Everyone, today (UTC)", await totals(since=midnight)),
        _line("Everyone, last 30 days", await totals(since=now - 30 * DAY)),
        _line(
            "Of which summaries and memory, 30 days",
            await totals(since=now - 30 * DAY, kind="summary"),
        ),
    ]
    for label, used, limit in await call.services.spending(call.key, call.author.id):
        if limit is not None:
            lines.append(f"• Left: {label.lower()}, ${max(0.0, limit - used):.2f} of ${limit:.2f}")
    return CommandResult("\n".join(lines))


def _system_is_private(call: Call) -> bool:
    # Showing the instructions, and refusing a non-admin, answer only the caller.
    return not call.args or not Command.allowed(SYSTEM, call)


REGISTRY.add(
    Command(
        name="ask",
        summary="Ask teambot a question",
        help="ask me; the answer starts a thread in channels",
        usage="<question>",
        handler=None,
        options=(
            Option("prompt", "What to ask", required=True),
            Option("image", "An image for the model to look at", Kind.IMAGE),
            Option(
                "reasoning", "Think before answering (slower, better on hard questions)", Kind.FLAG
            ),
        ),
        platforms=CHAT_PLATFORMS,
    )
)
REGISTRY.add(
    Command(
        name="reset",
        summary="Forget this conversation (channel, thread or DM)",
        help="forget this conversation (channel, thread or DM)",
        handler=_reset,
    )
)
REGISTRY.add(
    Command(
        name="forget",
        summary="Delete everything you wrote that I stored here, and your DM with me",
        help="delete every message you wrote that I stored on this platform, in every "
        "conversation, and your DM with me (`{typed} confirm` to do it)",
        usage="confirm",
        handler=_forget,
        options=(Option("confirm", "Delete now; without it you see what would go", Kind.FLAG),),
        private=True,
    )
)
REGISTRY.add(
    Command(
        name="reasoning",
        summary="Set whether I think before answering here (on, off, or show the thinking)",
        help="think before answering here by default; `show` also posts the thinking",
        usage="on|off|show",
        handler=_reasoning,
        options=(
            Option("mode", "on, off, or show (also posts my thinking)", choices=REASONING_MODES),
        ),
    )
)
SYSTEM = REGISTRY.add(
    Command(
        name="system",
        summary="Show or set my instructions for this conversation (admins in channels)",
        help="give me instructions for this conversation (admins); `{typed} clear` removes them",
        usage="<text>",
        handler=_system,
        options=(Option("text", "New instructions, or 'clear'; leave empty to show them"),),
        who=Who.ADMINS_TO_CHANGE,
        private=_system_is_private,
    )
)
REGISTRY.add(
    Command(
        name="summarize",
        summary="Catch up: topics, decisions, open questions and action items, with links",
        help="summarise what you missed here (since your last message), over `30m`/`2h`/`1d`/"
        "`7d`, `since:me`, or a message link's thread; end with `private` to see it alone",
        usage="[period | link] [private]",
        handler=_summarize,
        options=(
            Option(
                "span",
                "30m, 2h, 1d, 7d, since:me or a message link (default: since you last wrote)",
            ),
            Option("private", "Show the summary only to me", Kind.FLAG),
        ),
        private=_wants_private,
    )
)
REGISTRY.add(
    Command(
        name="limits",
        summary="Spending limits and today's spend; admins change them",
        help="the spending limits and what is spent; admins: `{typed} user <id> 2.00`, "
        "`{typed} channel 0.50`, `{typed} bot 20`, `off` to remove",
        usage="[user <id> | channel | bot] [dollars|off]",
        handler=limits.limits,
        options=(Option("change", "user <id> 2.00, channel 0.50, bot 20; empty to see them"),),
        who=Who.ADMINS_TO_CHANGE,
        private=True,
    )
)
DIGEST = REGISTRY.add(
    Command(
        name="digest",
        summary="A daily summary of this channel, posted at a set time (admins)",
        help="post a summary of the last 24 hours here every day at a time (admins change it)",
        usage="on [HH:MM]|off",
        handler=_digest,
        options=(Option("setting", "on, on 17:30, or off; leave empty to see the current one"),),
        who=Who.ADMINS_TO_CHANGE,
        private=_digest_is_private,
    )
)
TOOLS = REGISTRY.add(
    Command(
        name="tools",
        summary="Show or switch my tools here: history search, links, time (admins change)",
        help="whether I may search this team's history and use other tools here",
        usage="on|off",
        handler=_tools,
        options=(Option("mode", "on or off; leave empty to see my tools", choices=TOOL_MODES),),
        who=Who.ADMINS_TO_CHANGE,
        private=_tools_is_private,
    )
)
LISTEN = REGISTRY.add(
    Command(
        name="listen",
        summary="Answer every message in this channel without a mention (admins change it)",
        help="answer every message in this channel and its threads without a mention "
        "(admins change it)",
        usage="on|off",
        handler=_listen,
        options=(Option("mode", "on or off; leave empty to see it", choices=LISTEN_MODES),),
        who=Who.ADMINS_TO_CHANGE,
        private=_listen_is_private,
    )
)
REGISTRY.add(
    Command(
        name="usage",
        summary="Tokens and cost: yours, here, and everyone's (only you see it)",
        help="tokens and cost: yours, this conversation's, today's and the last 30 days'",
        handler=_usage,
        private=True,
    )
)
REGISTRY.add(
    Command(
        name="help",
        summary="What I can do and how to use me",
        help="this text",
        handler=_help,
        private=True,
    )
)
