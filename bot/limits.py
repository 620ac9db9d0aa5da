"""Spending limits: what a model call may cost, set aside in the store before it is made.

Each call's worst case (its prompt, priced from our calibrated count, plus its whole
output budget) is held against every limit that applies: the asker's day and month, the
channel's day, the whole bot's day (TEAMBOT_*_USD, or an override set with `limits`).
The store grants the hold atomically across processes, so many concurrent requests near
a limit overspend by at most one call. When the whole worst case does not fit, the call
is made smaller (reasoning off, `max_tokens` cut to what is left); when not even a short
answer fits, it is refused with one sentence: which limit, what is used, when it resets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.accounting import cost_usd, prices_of
from bot.config import Settings
from bot.store import Budget, Hold, Store
from bot.types import ConversationKey, Usage

MIN_USEFUL_TOKENS = 256  # an answer shorter than this is not worth making
OVERRIDES_FRESH_S = 1.0  # how long "no override is stored" is believed without asking again
HOLD_SECONDS = 15 * 60  # a hold outlives any call; a crashed process's holds lapse then


@dataclass(frozen=True)
class Grant:
    """What the call may do: its output budget and reasoning, and the hold to release."""

    max_tokens: int
    reasoning: bool
    hold: int | None = None
    refusal: str = ""  # set when the call must not be made: one sentence for people


def periods(now: float, zone: ZoneInfo) -> tuple[datetime, datetime, datetime, datetime]:
    """(start of today, start of tomorrow, start of this month, start of next month)."""
    local = datetime.fromtimestamp(now, zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return day, day + timedelta(days=1), month, next_month


def scopes(key: ConversationKey, user_id: str) -> dict[str, str]:
    """The override names (`limits` sets them) of the limits a call by `user_id` in `key` has."""
    user = f"user:{key.platform}:{user_id}"
    channel = f"channel:{key.platform}:{key.space}:{key.channel}"
    return {
        "user_day": f"{user}:day",
        "user_month": f"{user}:month",
        "channel_day": f"{channel}:day",
        "bot_day": "bot:day",
    }


class Limits:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.zone = ZoneInfo(settings.timezone)
        self.prices = prices_of(settings)
        self.configured = any(
            limit is not None
            for limit in (
                settings.user_daily_usd,
                settings.user_monthly_usd,
                settings.channel_daily_usd,
                settings.daily_usd,
            )
        )
        self._no_overrides_until = 0.0

    def overrides_changed(self) -> None:
        """An override was just set here: stop believing there are none."""
        self._no_overrides_until = 0.0

    async def active(self) -> bool:
        """Whether any limit could apply. Without configured limits that depends on stored
        overrides, which another process may set: asked again at most a second later."""
        if self.configured:
            return True
        if time.monotonic() < self._no_overrides_until:
            return False
        if await self.store.has_spend_limits():
            return True
        self._no_overrides_until = time.monotonic() + OVERRIDES_FRESH_S
        return False

    def budgets(self, key: ConversationKey, user_id: str, now: float) -> list[Budget]:
        s = self.settings
        day, _, month, _ = periods(now, self.zone)
        names = scopes(key, user_id)
        channel = f"{key.platform}:{key.space}:{key.channel}:"
        p, u = key.platform, user_id
        return [
            Budget(names["user_day"], day.timestamp(), s.user_daily_usd, p, u),
            Budget(names["user_month"], month.timestamp(), s.user_monthly_usd, p, u),
            Budget(names["channel_day"], day.timestamp(), s.channel_daily_usd, prefix=channel),
            Budget(names["bot_day"], day.timestamp(), s.daily_usd),
        ]

    async def grant(
        self,
        key: ConversationKey,
        user_id: str,
        prompt_tokens: int,
        max_tokens: int,
        reasoning: bool,
        now: float | None = None,
    ) -> Grant:
        """Set aside the worst case of one call, or as much of it as the limits allow."""
        if not await self.active():
            return Grant(max_tokens, reasoning)  # nothing to hold: no limit applies
        now = time.time() if now is None else now
        # Priced like the usage records; the worst case assumes no prompt cache hit.
        prompt = cost_usd(Usage(prompt_tokens), self.prices)
        per_token = cost_usd(Usage(completion_tokens=1), self.prices)
        want = prompt + max_tokens * per_token
        least = prompt + min(max_tokens, MIN_USEFUL_TOKENS) * per_token
        hold = Hold(key.platform, user_id, str(key), now + HOLD_SECONDS)
        budgets = self.budgets(key, user_id, now)
        granted, hold_id, left = await self.store.reserve(budgets, want, least, hold)
        if hold_id is None and granted <= 0:
            return Grant(0, False, refusal=await self._refusal(budgets, left, now))
        if granted >= want:
            return Grant(max_tokens, reasoning, hold_id)
        affordable = int((granted - prompt) / per_token) if per_token > 0 else max_tokens
        return Grant(max(1, min(max_tokens, affordable)), False, hold_id)

    async def release(self, grant: Grant | None) -> None:
        if grant is not None and grant.hold is not None:
            await self.store.release(grant.hold)

    async def _refusal(self, budgets: list[Budget], left: dict[str, float], now: float) -> str:
        """Which limit stopped the call, what of it is used, and when it resets."""
        tight = min(left, key=lambda scope: left[scope]) if left else budgets[-1].scope
        budget = next(b for b in budgets if b.scope == tight)
        used, limit = (await self.store.spent([budget]))[tight]
        _, _, _, next_month = periods(now, self.zone)
        monthly = tight.endswith(":month")
        resets = f"on {next_month:%b} 1" if monthly else f"at midnight ({self.settings.timezone})"
        of = f"${used:.2f} of" if limit is None else f"${used:.2f} of {{}} ${limit:.2f}"
        if tight.startswith("user:"):
            period = "monthly" if monthly else "daily"
            return f"You have used {of.format('your')} {period} limit; it resets {resets}."
        if tight.startswith("channel:"):
            return f"This channel has used {of.format('its')} daily limit; it resets {resets}."
        return f"The bot has used {of.format('its')} daily limit for everyone; it resets {resets}."
