"""Token counts with Mistral's Tekken tokenizer, calibrated against the API's own counts.

mistral-common ships Tekken vocabularies offline; the wheel lacks Small 4's v15 file
but the 131k-token v3 vocabulary it does ship has the same layout. Whatever our count
misses (control tokens, a vocabulary drift) is absorbed by `bot.accounting.Calibration`,
which tracks the ratio between the API's `usage.prompt_tokens` and our estimate.

We read that vocabulary into tiktoken ourselves instead of through mistral-common's
`Tekkenizer`: counting needs only the merge ranks, and `Tekkenizer.from_file` parses
the whole 19 MB JSON into Python objects and keeps a decoding table besides, which
made the bot's peak memory 178 MiB instead of about 90 (docs/benchmarks.md).
tests/test_tokens.py checks that both give the same counts.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import json
import logging
import re
from pathlib import Path

import tiktoken

log = logging.getLogger("teambot.tokens")

# Per-message framing ([INST], [/INST], role markers) that plain-text encoding misses.
MESSAGE_OVERHEAD = 4
# A fitted 1540x1540 image is about (1540/14)^2 / 4 patches; use the upper bound.
IMAGE_TOKENS = 3025
VOCABULARY = "tekken_240911.json"

# One vocabulary entry; the file lists them in rank order, each with its bytes in base64.
_ENTRY = re.compile(rb'"rank":\s*(\d+),\s*"token_bytes":\s*"([A-Za-z0-9+/=]*)"')


class VocabularyError(ValueError):
    """The vocabulary file is not laid out as expected."""


def vocabulary_path() -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / VOCABULARY


def read_vocabulary(raw: bytes) -> tiktoken.Encoding:
    """A tiktoken encoder from a Tekken JSON file, without parsing its entries as JSON.

    The file is `{"config": {...}, "vocab": [{"rank", "token_bytes", "token_str"}...]}`;
    only the config is parsed, the ranks are picked out with a regex so that the
    150k entries never exist as Python dicts.
    """
    vocab_at = raw.find(b'"vocab"')  # not partition(): that would copy the 19 MB tail
    if vocab_at < 0:
        raise VocabularyError('no "vocab" list')
    head = raw[:vocab_at]
    try:
        config = json.loads(head.rstrip().rstrip(b",") + b"}")["config"]
        size = config["default_vocab_size"] - config["default_num_special_tokens"]
        pattern = config["pattern"]
    except (ValueError, KeyError, TypeError) as exc:
        raise VocabularyError(f"unreadable config: {exc}") from exc
    ranks: dict[bytes, int] = {}
    for rank, entry in enumerate(_ENTRY.finditer(raw, vocab_at)):
        if rank == size:
            break
        if int(entry[1]) != rank:
            raise VocabularyError(f"entry {rank} has rank {entry[1].decode()}")
        ranks[base64.b64decode(entry[2])] = rank
    if len(ranks) != size:
        raise VocabularyError(f"{len(ranks)} distinct tokens, expected {size}")
    return tiktoken.Encoding("tekken", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


@functools.cache
def _tekken() -> tiktoken.Encoding | None:
    path = vocabulary_path()
    try:
        return read_vocabulary(path.read_bytes())
    except (OSError, VocabularyError) as exc:
        log.warning("cannot load the Tekken vocabulary (%s); estimating tokens from length", exc)
        return None


def load() -> None:
    """Load the tokenizer now (about 0.7 s) instead of on the first message."""
    _tekken()
    # What lives forever from here on (imports, the rank table) need not be walked by
    # every full garbage collection; with mistral-common's tokenizer those walks were a
    # 50 ms pause every few dozen replies.
    gc.freeze()


def count(text: str) -> int:
    """Tokens in `text` plus the per-message framing."""
    if not text:
        return MESSAGE_OVERHEAD
    tokenizer = _tekken()
    if tokenizer is None:
        return len(text) // 3 + MESSAGE_OVERHEAD  # a safe upper bound for Tekken
    return len(tokenizer.encode_ordinary(text)) + MESSAGE_OVERHEAD


# Counting a very long text takes milliseconds; do that off the event loop.
COUNT_IN_THREAD_CHARS = 20_000


async def count_async(text: str) -> int:
    """`count`, in a worker thread for texts long enough to stall the event loop."""
    if len(text) > COUNT_IN_THREAD_CHARS:
        return await asyncio.to_thread(count, text)
    return count(text)
