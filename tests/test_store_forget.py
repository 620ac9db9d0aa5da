"""What the store keeps and forgets: forget_user, export_user, purge_older, on every backend."""

from __future__ import annotations

import json
import time

from bot.store import AuditEntry, PlaceInfo, Scope, SearchQuery, Store, UsageRecord
from tests.test_store import place, store
from tests.test_store_search import DAY, conv, noted, say

__all__ = ["place", "store"]  # the backend fixtures, one run per backend

GENERAL = PlaceInfo("discord:G1:C1", "general", "public")
ALICE_DM = PlaceInfo("discord::D1", "Alice", "dm")
BOB_DM = PlaceInfo("discord::D2", "Bob", "dm")
SLACK = PlaceInfo("slack:T1:C1", "general", "public")
SLACK_DM = PlaceInfo("slack:T1:D9", "Alice", "dm")
ALICE = ("U1", "Alice")
BOB = ("U2", "Bob")
BOT = ("B0", "teambot")


async def usage(store: Store, platform: str, user: str, conversation: str) -> None:
    await store.record_usage(
        UsageRecord(platform, conversation, user, "m", 10, 5, 0.01, 100.0, "ok")
    )


async def scene(store: Store) -> None:
    """Alice (U1) and Bob (U2) on Discord; a U1 on Slack who is somebody else."""
    await noted(store, GENERAL, ALICE_DM, BOB_DM, SLACK, SLACK_DM)
    await say(store, conv(GENERAL), "alice says pomegranate in general", author=ALICE)
    await say(store, conv(GENERAL), "bob says pomegranate too", author=BOB)
    await say(store, conv(GENERAL), "the bot answers pomegranate", author=BOT, role="assistant")
    await say(store, conv(GENERAL, "T5"), "alice in a thread, pomegranate", author=ALICE)
    await say(store, conv(ALICE_DM), "my private pomegranate secret", author=ALICE)
    await say(store, conv(ALICE_DM), "the bot's answer in her DM", author=BOT, role="assistant")
    await say(store, conv(BOB_DM), "bob's own DM pomegranate", author=BOB)
    await say(store, conv(SLACK), "slack U1 pomegranate", author=ALICE)
    await say(store, conv(SLACK_DM), "slack U1 DM pomegranate", author=ALICE)
    for key in (conv(GENERAL), conv(GENERAL, "T5"), conv(ALICE_DM), conv(BOB_DM), conv(SLACK)):
        await store.set_setting(key, "memory", json.dumps({"text": "summary", "upto": 1}))
        await store.set_setting(key, "system", "be nice")
    await usage(store, "discord", "U1", conv(GENERAL))
    await usage(store, "discord", "U1", conv(ALICE_DM))
    await usage(store, "discord", "U2", conv(GENERAL))
    await usage(store, "slack", "U1", conv(SLACK))
    await store.add_audit(AuditEntry("discord", "U1", "limits", "user:discord:U2:day = 1.00"))


async def all_texts(store: Store, *keys: str) -> list[str]:
    return [m.text for key in keys for m in await store.messages(key)]


async def test_forget_user_removes_their_messages_and_their_dm(store):
    await scene(store)
    assert await store.forget_user("discord", "U1") == 4  # 2 own in public, own + bot in DM
    assert await all_texts(store, conv(GENERAL), conv(GENERAL, "T5")) == [
        "bob says pomegranate too",
        "the bot answers pomegranate",
    ]
    assert await store.messages(conv(ALICE_DM)) == []
    assert await all_texts(store, conv(BOB_DM)) == ["bob's own DM pomegranate"]
    # The same id on another platform is somebody else.
    assert await all_texts(store, conv(SLACK), conv(SLACK_DM)) == [
        "slack U1 pomegranate",
        "slack U1 DM pomegranate",
    ]
    # Summaries of every conversation they wrote in go; other settings and others' stay.
    for key in (conv(GENERAL), conv(GENERAL, "T5"), conv(ALICE_DM)):
        assert "memory" not in await store.settings(key)
        assert (await store.settings(key))["system"] == "be nice"
    assert "memory" in await store.settings(conv(BOB_DM))
    assert "memory" in await store.settings(conv(SLACK))
    # Usage stays, anonymised, on that platform only.
    rows = {(r.platform, r.user_id): r.totals.calls for r in await store.usage_rows()}
    assert rows == {("discord", "forgotten"): 2, ("discord", "U2"): 1, ("slack", "U1"): 1}
    assert len(await store.audit_entries()) == 1  # the audit stays
    assert await store.forget_user("discord", "U1") == 0


async def test_search_no_longer_finds_forgotten_text(store):
    await scene(store)
    scope = Scope("discord", GENERAL.key, ("G1",))
    dm_scope = Scope("discord", ALICE_DM.key, ("G1",))
    before = await store.search(scope, SearchQuery("pomegranate"))
    assert "alice says pomegranate in general" in [h.message.text for h in before]
    assert await store.search(dm_scope, SearchQuery("private secret"))
    assert await store.search(scope, SearchQuery("pomegranate", author="Alice"))
    await store.forget_user("discord", "U1")
    after = [h.message.text for h in await store.search(scope, SearchQuery("pomegranate"))]
    assert after == ["bob says pomegranate too"]
    assert await store.search(dm_scope, SearchQuery("private secret")) == []
    assert await store.search(scope, SearchQuery("pomegranate", author="Alice")) == []
    # Slack's U1 is still found.
    slack = Scope("slack", SLACK.key, ("T1",))
    assert [h.message.text for h in await store.search(slack, SearchQuery("pomegranate"))] == [
        "slack U1 pomegranate"
    ]


async def test_export_user(store):
    await scene(store)
    everything = await store.export_user(None, "U1")
    json.dumps(everything)  # JSON-ready
    assert everything["user_id"] == "U1" and everything["platform"] is None
    texts = [m["text"] for m in everything["messages"]]
    assert texts == [
        "alice says pomegranate in general",
        "alice in a thread, pomegranate",
        "my private pomegranate secret",
        "the bot's answer in her DM",
        "slack U1 pomegranate",
        "slack U1 DM pomegranate",
    ]
    assert len(everything["usage"]) == 3
    assert everything["dm_settings"][conv(ALICE_DM)]["system"] == "be nice"
    assert conv(BOB_DM) not in everything["dm_settings"]
    assert [a["action"] for a in everything["audit"]] == ["limits"]

    discord = await store.export_user("discord", "U1")
    assert [m["text"] for m in discord["messages"]] == texts[:4]
    assert {u["platform"] for u in discord["usage"]} == {"discord"}
    assert set(discord["dm_settings"]) == {conv(ALICE_DM)}
    slack = await store.export_user("slack", "U1")
    assert [m["text"] for m in slack["messages"]] == texts[4:]
    assert slack["audit"] == []
    nobody = await store.export_user(None, "U404")
    assert nobody["messages"] == [] and nobody["usage"] == [] and nobody["dm_settings"] == {}


async def test_purge_older_drops_old_messages_and_their_summaries(store):
    await noted(store, GENERAL, ALICE_DM)
    await say(store, conv(GENERAL), "ancient pomegranate", ago_days=40)
    await say(store, conv(GENERAL), "fresh words", ago_days=1)
    await say(store, conv(ALICE_DM), "recent DM", ago_days=2)
    for key in (conv(GENERAL), conv(ALICE_DM)):
        await store.set_setting(key, "memory", "summary")
    await store.record_usage(
        UsageRecord(
            "discord", conv(GENERAL), "U1", "m", 1, 1, 0.5, 1.0, "ok", time.time() - 40 * DAY
        )
    )
    assert await store.purge_older(time.time() - 30 * DAY) == 1
    assert await all_texts(store, conv(GENERAL), conv(ALICE_DM)) == ["fresh words", "recent DM"]
    assert "memory" not in await store.settings(conv(GENERAL))
    assert (await store.settings(conv(ALICE_DM)))["memory"] == "summary"
    assert (await store.usage_totals()).calls == 1  # usage rows stay
    scope = Scope("discord", GENERAL.key, ("G1",))
    assert await store.search(scope, SearchQuery("ancient pomegranate")) == []
    assert await store.purge_older(time.time() - 30 * DAY) == 0


async def test_purge_older_works_in_batches(store, monkeypatch):
    import bot.store.postgres
    import bot.store.sqlite

    monkeypatch.setattr(bot.store.sqlite, "PURGE_BATCH", 2)
    monkeypatch.setattr(bot.store.postgres, "PURGE_BATCH", 2)
    await noted(store, GENERAL)
    for n in range(5):
        await say(store, conv(GENERAL), f"old {n}", ago_days=10)
    await say(store, conv(GENERAL), "new", ago_days=0)
    assert await store.purge_older(time.time() - DAY) == 5
    assert await all_texts(store, conv(GENERAL)) == ["new"]
