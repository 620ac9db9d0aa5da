"""Text conversions both ways: nothing the model writes can ping; Slack markup in is readable."""

from __future__ import annotations

import random

from adapters.slack.render import incoming, neutralise, stable_prefix
from tests.fakes.slack.records import PING

PIECES = [
    "<",
    "!",
    "@",
    "channel",
    "here",
    "everyone",
    " ",
    "x",
    ">",
    "subteam^",
    "U1",
    "W9",
    "#",
    "|",
    "a < b",
    "`",
    "\n",
    "&lt;",
]


def random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30))) for _ in range(count)]


def test_neutralised_text_never_pings_and_reads_the_same() -> None:
    for text in random_texts(1, 5000):
        safe = neutralise(text)
        assert not PING.search(safe), (text, safe)
        assert safe.replace("\u200b", "") == text.replace("\u200b", "")


def test_streamed_prefixes_render_as_prefixes_of_the_final_text() -> None:
    # Native streaming appends rendered text, so a prefix must never render differently later.
    for text in random_texts(2, 3000):
        final = neutralise(text)
        for cut in range(len(text) + 1):
            assert final.startswith(neutralise(stable_prefix(text[:cut]))), (text, cut)


def test_incoming_markup_becomes_plain_text() -> None:
    names = {"U2": "Bob"}
    text = (
        "<@UBOT> ask <@U2> about <#C1|general>, see <https://x.test/a|the doc> "
        "or <https://x.test/b>; cc <!here> and <!subteam^S1|@devs>: 1 &lt; 2 &amp;&amp; 3 &gt; 2"
    )
    assert incoming(text, names, "UBOT") == (
        "ask @Bob about #general, see the doc (https://x.test/a) or https://x.test/b; "
        "cc @here and @devs: 1 < 2 && 3 > 2"
    )
