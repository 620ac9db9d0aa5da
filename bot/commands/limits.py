"""The `limits` command: see and change spending limits at run time (admins)."""

from __future__ import annotations

import re

from bot.commands.registry import Call
from bot.limits import scopes
from bot.text import usd
from bot.types import CommandResult

USAGE = (
    "Use `limits` to see them; `limits user <@user or id> <dollars|off>`, "
    "`limits channel <dollars|off>` or `limits bot <dollars|off>` to change a daily limit."
)
_USER = re.compile(r"^<@!?([A-Za-z0-9]+)(?:\|[^>]*)?>$|^([A-Za-z0-9]{2,64})$")


def amount(text: str) -> float | str | None:
    """Dollars, None for "off", or the reason it is neither."""
    if text.lower() in ("off", "none", "unlimited"):
        return None
    try:
        value = float(text.removeprefix("$"))
    except ValueError:
        return USAGE
    return value if 0 <= value < 1e9 else USAGE


async def show(call: Call) -> CommandResult:
    lines = ["Spending limits (today, in the bot's time zone):"]
    for label, used, limit in await call.services.spending(call.key, call.author.id):
        cap = "no limit" if limit is None else f"${limit:.2f}"
        lines.append(f"• {label}: ${usd(used)} spent, {cap}")
    return CommandResult("\n".join(lines), True)


async def change(call: Call) -> CommandResult:
    words = call.args.split()
    names = scopes(call.key, call.author.id)
    if len(words) == 3 and words[0].lower() == "user":
        match = _USER.match(words[1])
        if match is None:
            return CommandResult(USAGE, True)
        user = match.group(1) or match.group(2)
        scope, what = f"user:{call.key.platform}:{user}:day", f"the daily limit of {user}"
    elif len(words) == 2 and words[0].lower() in ("channel", "bot"):
        which = words[0].lower()
        scope = names["channel_day"] if which == "channel" else names["bot_day"]
        what = "this channel's daily limit" if which == "channel" else "the bot's daily limit"
    else:
        return CommandResult(USAGE, True)
    value = amount(words[-1])
    if isinstance(value, str):
        return CommandResult(value, True)
    await call.services.set_spend_limit(call, scope, value)
    shown = "removed (back to the configured one)" if value is None else f"set to ${value:.2f}"
    return CommandResult(f"Set: {what} is {shown}.")


async def limits(call: Call) -> CommandResult:
    return await (change(call) if call.args else show(call))
