"""The App Home tab: what teambot does, its commands, and the viewer's usage and limits.

Published with views.publish whenever someone opens the tab (`app_home_opened`, tab
"home"), so the figures are the viewer's own and current. Commands come from the
registry, as the manifest's and `/help`'s do.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.commands import REGISTRY
from bot.engine import Engine
from bot.types import ConversationKey

ABOUT = (
    "I'm *teambot*, Mistral Small 4 for this workspace. Mention me in a channel and I answer "
    "in a thread (then the thread is our conversation, no more mentions needed), or write to "
    "me in *Messages*. I read images and files you attach, search what was said in the "
    "channels you can read, summarize threads and channels, and never ping anyone."
)
BLOCKS_MAX = 100  # Slack's limit for a Home view


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def month_start(timezone: str, now: float) -> float:
    """The start of the current month in `timezone`, as a unix time."""
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def dollars(amount: float) -> str:
    """Cents, or millionths below a cent (one answer costs well under a cent)."""
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"


def commands_text() -> str:
    return "\n".join(f"`{c.typed('slack')}` {c.summary}" for c in REGISTRY.on("slack"))


async def usage_text(engine: Engine, team: str, user: str, channel: str) -> str:
    now = time.time()
    since = month_start(engine.settings.timezone, now)
    totals = await engine.usage_totals(since=since, user_id=user)
    lines = [
        f"This month: *{dollars(totals.cost_usd)}* for {totals.calls} model calls "
        f"({totals.prompt_tokens:,} tokens in, {totals.completion_tokens:,} out)."
    ]
    key = ConversationKey("slack", team, channel)
    for label, spent, limit in await engine.spending(key, user):
        if limit is None or label.startswith("This channel"):
            continue
        lines.append(
            f"• {label}: ${spent:.2f} spent, ${max(0.0, limit - spent):.2f} left of ${limit:.2f}"
        )
    if len(lines) == 1:
        lines.append("No spending limit applies to you.")
    return "\n".join(lines)


async def view(engine: Engine, team: str, user: str, channel: str) -> dict[str, Any]:
    """The Home view for `user` (opened in their app channel `channel`)."""
    blocks = [
        _header("teambot"),
        _section(ABOUT),
        {"type": "divider"},
        _header("Commands"),
        _section(commands_text()),
        {"type": "divider"},
        _header("Your usage"),
        _section(await usage_text(engine, team, user, channel)),
    ]
    return {"type": "home", "blocks": blocks[:BLOCKS_MAX]}
