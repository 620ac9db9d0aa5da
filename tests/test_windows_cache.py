"""The window cache holds at most `rows` stored messages in all (bot/window.py)."""

from __future__ import annotations

from bot.types import ConversationKey
from bot.window import Windows
from tests.helpers import collect, message


async def test_the_least_recent_windows_go_when_the_rows_would_exceed_the_bound(engine):
    keys = [ConversationKey("console", "", f"c{n}") for n in range(3)]
    for key in keys:
        for n in range(2):  # two questions and two answers: 4 rows each
            await collect(engine, message(f"question {n}", conv=key))
    windows = Windows(engine.store, size=10, rows=10)
    for key in keys:
        assert len((await windows.get(key, named=False)).rows) == 4
    # 12 rows would be held: the least recently used conversation made room.
    assert list(windows._cached) == keys[1:]
    await windows.get(keys[1], named=False)  # now the most recent
    await windows.get(keys[0], named=False)
    assert list(windows._cached) == [keys[1], keys[0]]


async def test_one_window_stays_cached_even_when_it_alone_is_over_the_bound(engine):
    key = ConversationKey("console", "", "big")
    for n in range(3):
        await collect(engine, message(f"question {n}", conv=key))
    windows = Windows(engine.store, size=10, rows=2)
    window = await windows.get(key, named=False)
    assert len(window.rows) == 6 and list(windows._cached) == [key]
