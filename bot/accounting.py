"""What model calls cost, and how far our token counts are from the API's.

Every call's usage is written to the store's `usage` table with its price, whatever
the call was for. `Calibration` keeps the running ratio between the API's
`usage.prompt_tokens` and our Tekken estimate, so the context budget is spent in the
API's tokens; the ratio survives restarts in the store's meta table.
"""

from __future__ import annotations

from bot.store import Store, UsageRecord
from bot.types import ConversationKey, Usage

INPUT_USD_PER_MTOK = 0.15
OUTPUT_USD_PER_MTOK = 0.60
CALIBRATION_KEY = "calibration_ratio"
CALIBRATION_SAVE_EVERY = 50  # turns between writes of the ratio


def cost_usd(usage: Usage) -> float:
    """Mistral Small 4's list price for `usage`."""
    return (
        usage.prompt_tokens * INPUT_USD_PER_MTOK + usage.completion_tokens * OUTPUT_USD_PER_MTOK
    ) / 1e6


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

    def __init__(self, store: Store, model: str) -> None:
        self.store = store
        self.model = model
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
        return UsageRecord(
            platform=key.platform,
            conversation=str(key),
            user_id=user_id,
            model=self.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost_usd(usage),
            latency_ms=latency_ms,
            outcome=outcome,
            kind=kind,
        )

    async def calibrate(self, estimate: int, reported: int) -> None:
        self.calibration.observe(estimate, reported)
        self._observed += 1
        if self._observed % CALIBRATION_SAVE_EVERY == 1:
            await self.store.set_meta(CALIBRATION_KEY, f"{self.calibration.ratio:.4f}")
