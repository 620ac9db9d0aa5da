"""Our lean Tekken loader against mistral-common's own Tekkenizer on the same file."""

from __future__ import annotations

import base64
import json
import random

import pytest
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from bot import tokens

SAMPLES = [
    "hello world",
    "What did we decide above about the Q3 roadmap? @alice said ship on Friday.",
    "def f(x):\n    return {'a': [1, 2, 3]}\n\n\n\tindented\r\nwindows line",
    "Ünïcödé façade naïve — “quotes” and ‘apostrophes’ … ellipsis",
    "日本語のテキストと中文文本，还有한국어도 있어요。",
    "مرحبا بالعالم، كيف حالك؟ שלום עולם",
    "emoji 🎉🚀👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵 and ZWJ",
    "[INST] <s> </s> [/INST] [TOOL_CALLS] <unk> special-looking text",
    "numbers 1234567890 3.14159 1e-9 0x1F -42",
    "    lots   of    spaces\n\n\n\n    and blank lines     ",
    "```python\nprint('fenced')\n```\n> quote\n- list item\n1. numbered",
    "",
]


@pytest.fixture(scope="module")
def reference() -> Tekkenizer:
    return Tekkenizer.from_file(str(tokens.vocabulary_path()))


def reference_count(reference: Tekkenizer, text: str) -> int:
    return len(reference.encode(text, bos=False, eos=False)) + tokens.MESSAGE_OVERHEAD


@pytest.mark.parametrize("text", SAMPLES)
def test_counts_match_mistral_common(reference, text):
    assert tokens.count(text) == reference_count(reference, text)


def test_counts_match_on_random_unicode(reference):
    rng = random.Random(2603)
    alphabet = [chr(c) for c in range(32, 0x3000) if chr(c).isprintable()] + ["\n", "\t", " "] * 50
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
        assert tokens.count(text) == reference_count(reference, text), text


def test_loader_keeps_only_the_regular_vocabulary(reference):
    encoding = tokens._tekken()
    assert encoding is not None
    assert encoding.n_vocab == reference.n_words - reference.num_special_tokens


def _vocabulary(entries: list[tuple[int, bytes]], size: int = 2) -> bytes:
    config = {
        "pattern": r"\S+|\s+",
        "default_vocab_size": size + 1,
        "default_num_special_tokens": 1,
    }
    vocab = [
        {"rank": rank, "token_bytes": base64.b64encode(b).decode(), "token_str": b.decode()}
        for rank, b in entries
    ]
    return json.dumps({"config": config, "vocab": vocab}, indent=4).encode()


def test_a_tiny_vocabulary_reads_and_encodes():
    encoding = tokens.read_vocabulary(_vocabulary([(0, b"a"), (1, b"b")]))
    assert encoding.encode_ordinary("abba") == [0, 1, 1, 0]


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b'{"config": {}}', 'no "vocab"'),
        (b'{"config": {"pattern": "x"}, "vocab": []}', "unreadable config"),
        (_vocabulary([(0, b"a"), (2, b"b")]), "entry 1 has rank 2"),
        (_vocabulary([(0, b"a")]), "1 distinct tokens, expected 2"),
    ],
)
def test_a_malformed_vocabulary_is_refused_with_the_reason(raw, problem):
    with pytest.raises(tokens.VocabularyError, match=problem):
        tokens.read_vocabulary(raw)
