"""Platform-neutral commands. Adapters map their slash commands (and the console its
`/name` lines) onto `run`; each returns one `CommandResult`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.store import UsageTotals
from bot.types import Author, CommandResult, ConversationKey

if TYPE_CHECKING:
    from bot.engine import Engine

HELP = """\
**teambot** answers with Mistral Small 4. Mention me in a channel, reply to me, or DM me.

Commands:
• `reset`: forget this conversation (channel, thread or DM)
• `reasoning on|off|show`: think before answering here by default; `show` also posts the thinking
• `system <text>`: give me instructions for this conversation (admins); `system clear` removes them
• `usage`: tokens and cost: yours, this conversation's, today's and the last 30 days'
• `help`: this text

Start a message with `think:` to have me reason carefully about that one message.
I see images and text files you attach. Replies never ping anyone."""

DAY = 86_400.0


async def run(
    engine: Engine,
    key: ConversationKey,
    author: Author,
    name: str,
    args: str,
    *,
    is_group: bool = True,
) -> CommandResult:
    name = name.strip().lower().lstrip("/")
    args = args.strip()
    if name == "help":
        return CommandResult(HELP, private=True)
    if name == "reset":
        return await _reset(engine, key)
    if name == "reasoning":
        return await _reasoning(engine, key, args)
    if name == "system":
        return await _system(engine, key, author, args, is_group)
    if name == "usage":
        return await _usage(engine, key, author)
    return CommandResult(f"I don't know the command `{name}`. Try `help`.", private=True)


async def _reset(engine: Engine, key: ConversationKey) -> CommandResult:
    count = await engine.forget(key)
    noun = "message" if count == 1 else "messages"
    return CommandResult(f"Forgot this conversation ({count} {noun}). Starting fresh.")


async def _reasoning(engine: Engine, key: ConversationKey, args: str) -> CommandResult:
    choice = args.lower()
    if not choice:
        current = (await engine.conversation_settings(key)).get("reasoning")
        if current is None:
            current = "on" if engine.settings.reasoning else "off"
        return CommandResult(f"Reasoning here is **{current}**. Use `reasoning on|off|show`.")
    if choice not in ("on", "off", "show"):
        return CommandResult("Use `reasoning on`, `reasoning off` or `reasoning show`.", True)
    await engine.set_setting(key, "reasoning", choice)
    meaning = {
        "on": "I'll think before answering here (slower, better on hard questions).",
        "off": "I'll answer directly here without extended thinking.",
        "show": "I'll think before answering here and show my thinking with each answer.",
    }[choice]
    return CommandResult(f"Reasoning **{choice}**. {meaning}")


async def _system(
    engine: Engine, key: ConversationKey, author: Author, args: str, is_group: bool
) -> CommandResult:
    if not args:
        current = (await engine.conversation_settings(key)).get("system")
        if not current:
            return CommandResult("No instructions are set for this conversation.", private=True)
        return CommandResult(f"Instructions for this conversation:\n{current}", private=True)
    if is_group and not engine.is_admin(author.id):
        return CommandResult(
            "Only admins can change my instructions here (TEAMBOT_ADMIN_IDS).", private=True
        )
    if args.lower() == "clear":
        await engine.set_setting(key, "system", None)
        return CommandResult("Instructions cleared for this conversation.")
    await engine.set_setting(key, "system", args)
    return CommandResult("Instructions set for this conversation.")


def _line(label: str, totals: UsageTotals) -> str:
    calls = f"{totals.calls:,} {'reply' if totals.calls == 1 else 'replies'}"
    return (
        f"• {label}: {calls}, {totals.prompt_tokens:,} tokens in / "
        f"{totals.completion_tokens:,} out, ${totals.cost_usd:.4f}"
    )


async def _usage(engine: Engine, key: ConversationKey, author: Author) -> CommandResult:
    now = time.time()
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    store = engine.store
    lines = [
        f"Usage of {engine.settings.model} ($0.15 in / $0.60 out per million tokens):",
        _line(
            "You, last 30 days", await store.usage_totals(since=now - 30 * DAY, user_id=author.id)
        ),
        _line("This conversation", await store.usage_totals(conversation=str(key))),
        _line("Everyone, today (UTC)", await store.usage_totals(since=midnight)),
        _line("Everyone, last 30 days", await store.usage_totals(since=now - 30 * DAY)),
    ]
    return CommandResult("\n".join(lines), private=True)
