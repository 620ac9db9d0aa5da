"""What model calls cost, and how far our token counts are from the API's.

Every call's usage is written to the store's `usage` table with its price, whatever
the call was for. `Calibration` keeps the running ratio between the API's
`usage.prompt_tokens` and our Tekken estimate, so the context budget is spent in the
API's tokens; the ratio survives restarts in the store's meta table.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot import metrics
from bot.config import Settings
from bot.store import Store, UsageRecord
from bot.types import ConversationKey, Usage

# Mistral Small 4's list prices, in US dollars per million tokens; cached prompt tokens
# are billed at 10% of the input price (docs.mistral.ai, "Prompt caching").
INPUT_USD_PER_MTOK = 0.15
OUTPUT_USD_PER_MTOK = 0.60
CACHED_USD_PER_MTOK = 0.015
# Reading attached files (bot/documents.py, bot/audio.py): Mistral's list prices for
# mistral-ocr-latest (OCR 4.1: $4 per 1000 pages) and voxtral-mini-latest ($0.003/min).
OCR_USD_PER_PAGE = 4.0 / 1000
TRANSCRIPTION_USD_PER_MINUTE = 0.003
CALIBRATION_KEY = "calibration_ratio"
CALIBRATION_SAVE_EVERY = 50  # turns between writes of the ratio


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens (TEAMBOT_PRICE_INPUT/_OUTPUT/_CACHED)."""

    input: float = INPUT_USD_PER_MTOK
    output: float = OUTPUT_USD_PER_MTOK
    cached: float = CACHED_USD_PER_MTOK


LIST_PRICES = Prices()


def prices_of(settings: Settings) -> Prices:
    return Prices(settings.price_input, settings.price_output, settings.price_cached)


def cost_usd(usage: Usage, prices: Prices = LIST_PRICES) -> float:
    """What `usage` costs: cached prompt tokens at the cached rate, the rest of the prompt
    at the input price, the answer at the output price (the one pricing rule: usage
    records, `usage`, `teambot usage` and the spending limits all use it)."""
    cached = min(max(usage.cached_tokens, 0), usage.prompt_tokens)
    return (
        (usage.prompt_tokens - cached) * prices.input
        + cached * prices.cached
        + usage.completion_tokens * prices.output
    ) / 1e6


def ocr_cost_usd(pages: int) -> float:
    """What OCR of `pages` pages costs (billed from the API's `pages_processed`)."""
    return max(0, pages) * OCR_USD_PER_PAGE


def transcription_cost_usd(seconds: float) -> float:
    """What transcribing `seconds` of audio costs (pro rata; Mistral's rounding is unpublished)."""
    return max(0.0, seconds) / 60 * TRANSCRIPTION_USD_PER_MINUTE


class Calibration:
    """Running ratio of the API's prompt token count to ours (an exponential average)."""

    def __init__(self, ratio: float = 1.0) -> None:
        self.ratio = ratio

    def observe(self, estimated: int, reported: int) -> None:
        if estimated <= 0 or reported <= 0:
            return
        sample = min(2.0, max(0.5, reported / estimated))
        self.ratio = 0.8 * self.ratio + 0.2 * sample


class Accounts:
    """Usage records and the calibration ratio, kept in the store."""

    def __init__(self, store: Store, model: str, prices: Prices = LIST_PRICES) -> None:
        self.store = store
        self.model = model
        self.prices = prices
        self.calibration = Calibration()
        self._observed = 0

    async def load(self) -> None:
        ratio = await self.store.get_meta(CALIBRATION_KEY)
        if ratio:
            self.calibration.ratio = float(ratio)

    def budget(self, context_tokens: int) -> int:
        """The context budget in our own token counts."""
        return int(context_tokens / self.calibration.ratio)

    def usage_record(
        self,
        key: ConversationKey,
        user_id: str,
        usage: Usage,
        latency_ms: float,
        outcome: str,
        kind: str = "reply",
    ) -> UsageRecord:
        metrics.model_call(kind, usage, cost_usd(usage, self.prices))
        return UsageRecord(
            platform=key.platform,
            conversation=str(key),
            user_id=user_id,
            model=self.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost_usd(usage, self.prices),
            latency_ms=latency_ms,
            outcome=outcome,
            kind=kind,
            cached_tokens=min(usage.cached_tokens, usage.prompt_tokens),
        )

    async def record_file(
        self,
        key: ConversationKey,
        user_id: str,
        kind: str,
        model: str,
        cost: float,
        latency_ms: float,
        usage: Usage | None = None,
    ) -> None:
        """A usage row for reading an attached file ("ocr" or "transcription")."""
        usage = usage or Usage()
        await self.store.record_usage(
            UsageRecord(
                platform=key.platform,
                conversation=str(key),
                user_id=user_id,
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost,
                latency_ms=latency_ms,
                outcome="ok",
                kind=kind,
            )
        )

    async def calibrate(self, estimate: int, reported: int) -> None:
        if estimate <= 0 or reported <= 0:
            return  # nothing was reported (a stream without usage): nothing to learn
        self.calibration.observe(estimate, reported)
        self._observed += 1
        if self._observed % CALIBRATION_SAVE_EVERY == 1:
            await self.store.set_meta(CALIBRATION_KEY, f"{self.calibration.ratio:.4f}")
