"""Daily digests: the command, and exactly one digest per channel per day across restarts."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.types import PUBLIC, Author, ConversationKey, Place
from tests.fakes.mistral import Reply
from tests.helpers import BOB, key, message

GENERAL = Place("C9", "general", PUBLIC)
ADMIN = Author("A1", "Admin")
CHANNEL = key("C9")


def at(day: int, hhmm: str) -> float:
    hour, minute = map(int, hhmm.split(":"))
    zone = ZoneInfo("Europe/Paris")
    return datetime(2026, 12, day, hour, minute, tzinfo=zone).timestamp()


class Board:
    """Where digests land: (channel, text) per post."""

    def __init__(self) -> None:
        self.posts: list[tuple[ConversationKey, str]] = []

    async def post(self, key: ConversationKey, text: str) -> None:
        self.posts.append((key, text))


async def test_digest_command_is_for_admins_in_channels(make_engine):
    engine = await make_engine(admin_ids=frozenset({"A1"}))
    refused = await engine.command(CHANNEL, BOB, "digest", "on 17:30", is_group=True)
    assert refused.private and "admin" in refused.text.lower()
    done = await engine.command(CHANNEL, ADMIN, "digest", "on 7:05", is_group=True)
    assert "07:05" in done.text and not done.private
    assert (await engine.conversation_settings(CHANNEL)).digest == "07:05"
    shown = await engine.command(CHANNEL, BOB, "digest", "", is_group=True)
    assert shown.private and "07:05" in shown.text
    bad = await engine.command(CHANNEL, ADMIN, "digest", "on 25:00", is_group=True)
    assert bad.private and bad.text.startswith("Use")
    thread = await engine.command(key("C9", "t1"), ADMIN, "digest", "on", is_group=True)
    assert "for channels" in thread.text
    off = await engine.command(CHANNEL, ADMIN, "digest", "off", is_group=True)
    assert "off" in off.text and (await engine.conversation_settings(CHANNEL)).digest is None


async def test_one_digest_per_channel_per_day_across_a_restart(make_engine, fake_mistral, tmp_path):
    db = tmp_path / "digests.db"
    first = await make_engine(db, timezone="Europe/Paris")
    board = Board()
    first.register_poster("test", board.post)
    await first.set_setting(CHANNEL, "digest", "09:00")
    await first.set_setting(key("C8"), "digest", "09:00")  # a quiet channel
    now = at(6, "09:10")
    note = message("we ship on friday", conv=CHANNEL, author=BOB, is_group=True, place=GENERAL)
    await first.record(note)
    await first.store._run(  # said an hour before the digest
        first.store._rows, "UPDATE messages SET created_at = ? RETURNING id", [now - 3600]
    )
    fake_mistral.enqueue(Reply("**Decisions**\n- Ship on Friday [1]."))
    assert await first.digests.tick(at(6, "08:59")) == 0  # not yet
    assert await first.digests.tick(now) == 1
    assert await first.digests.tick(now + 60) == 0
    [(where, text)] = board.posts
    assert where == CHANNEL and text.startswith("**Daily digest**") and "Ship on Friday" in text
    await first.aclose()

    second = await make_engine(db, timezone="Europe/Paris")  # a restart, same day
    second.register_poster("test", board.post)
    assert await second.digests.tick(now + 120) == 0
    assert len(board.posts) == 1
    # The next day: a day with nothing new posts nothing, and costs no model call.
    requests = len(fake_mistral.requests)
    assert await second.digests.tick(at(7, "09:01")) == 0
    assert len(fake_mistral.requests) == requests
