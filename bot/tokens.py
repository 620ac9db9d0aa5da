"""Token counts with Mistral's Tekken tokenizer, calibrated against the API's own counts.

mistral-common ships Tekken vocabularies offline; the wheel lacks Small 4's v15 file
but the 131k-token v3 vocabulary it does ship has the same layout. Whatever our count
misses (control tokens, a vocabulary drift) is absorbed by `Calibration`, which
tracks the ratio between the API's `usage.prompt_tokens` and our estimate.
"""

from __future__ import annotations

import functools
import gc
import logging
from pathlib import Path
from typing import Protocol

log = logging.getLogger("teambot.tokens")

# Per-message framing ([INST], [/INST], role markers) that plain-text encoding misses.
MESSAGE_OVERHEAD = 4
# A fitted 1540x1540 image is about (1540/14)^2 / 4 patches; use the upper bound.
IMAGE_TOKENS = 3025


class Tokenizer(Protocol):
    def encode(self, s: str, bos: bool, eos: bool) -> list[int]: ...


@functools.cache
def _tekken() -> Tokenizer | None:
    try:
        import mistral_common
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    except ImportError:  # pragma: no cover - mistral-common is a dependency
        return None
    path = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    if not path.is_file():
        log.warning("Tekken vocabulary not found at %s; estimating tokens from length", path)
        return None
    tokenizer: Tokenizer = Tekkenizer.from_file(str(path))
    return tokenizer


def load() -> None:
    """Load the tokenizer now (about 0.7 s) instead of on the first message."""
    _tekken()
    # The vocabulary is a few hundred thousand objects that live forever. Without a
    # freeze, every full garbage collection walks them all: a 50 ms pause per reply
    # every few dozen replies.
    gc.freeze()


def count(text: str) -> int:
    """Tokens in `text` plus the per-message framing."""
    if not text:
        return MESSAGE_OVERHEAD
    tokenizer = _tekken()
    if tokenizer is None:
        return len(text) // 3 + MESSAGE_OVERHEAD  # a safe upper bound for Tekken
    return len(tokenizer.encode(text, bos=False, eos=False)) + MESSAGE_OVERHEAD


class Calibration:
    """Running ratio of the API's prompt token count to ours (an exponential average)."""

    def __init__(self, ratio: float = 1.0) -> None:
        self.ratio = ratio

    def observe(self, estimated: int, reported: int) -> None:
        if estimated <= 0 or reported <= 0:
            return
        sample = min(2.0, max(0.5, reported / estimated))
        self.ratio = 0.8 * self.ratio + 0.2 * sample

    def scale(self, estimated: int) -> int:
        return int(estimated * self.ratio) + 1
