"""Spending limits in the store: reserve, release, spent, overrides and the audit log,
on every backend, including reservations racing from two store instances (two
processes' worth of connections) on one database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.store import AuditEntry, Budget, Hold, Store, UsageRecord
from tests.test_store import open_backend, place, store

__all__ = ["place", "store"]  # the backend fixtures, one run per backend

HOUR = 3600.0


def bot_budget(limit: float | None, scope: str = "bot:day", since: float = 0.0) -> Budget:
    return Budget(scope, since or time.time() - HOUR, limit)


def hold(
    platform: str = "slack",
    user_id: str = "U1",
    conversation: str = "slack:T1:C1:",
    ttl: float = 60.0,
) -> Hold:
    return Hold(platform, user_id, conversation, time.time() + ttl)


async def spend(
    store: Store,
    cost: float,
    *,
    platform: str = "slack",
    user_id: str = "U1",
    conversation: str = "slack:T1:C1:",
    ago: float = 60.0,
) -> None:
    """A usage row of `cost` dollars, created `ago` seconds ago."""
    await store.record_usage(
        UsageRecord(
            platform, conversation, user_id, "m", 10, 10, cost, 1.0, "ok", time.time() - ago
        )
    )


async def spent_on(store: Store, budget: Budget) -> float:
    return (await store.spent([budget]))[budget.scope][0]


async def holds_stored(store: Store) -> int:
    """Rows in spend_holds, expired ones included (what `reserve` cleans up)."""
    sql = "SELECT count(*) AS n FROM spend_holds"
    if hasattr(store, "db"):  # SQLite
        rows: list[dict[str, Any]] = await store._run(store._rows, sql)  # type: ignore[attr-defined]
    else:
        rows = await store._all(sql)  # type: ignore[attr-defined]
    return int(rows[0]["n"])


async def test_reserve_grants_all_then_part_then_refuses(store):
    await spend(store, 0.55)
    budget = bot_budget(1.00)
    granted, first, left = await store.reserve([budget], 0.30, 0.10, hold())
    assert granted == pytest.approx(0.30) and isinstance(first, int)
    assert left == {"bot:day": pytest.approx(0.45)}  # before this hold
    granted, second, left = await store.reserve([budget], 0.30, 0.10, hold())
    assert granted == pytest.approx(0.15)  # what is left, as that is at least `least`
    assert isinstance(second, int) and second != first
    assert left == {"bot:day": pytest.approx(0.15)}
    granted, third, left = await store.reserve([budget], 0.30, 0.10, hold())
    assert (granted, third) == (0.0, None)
    assert left == {"bot:day": pytest.approx(0.0, abs=1e-9)}
    assert await spent_on(store, budget) == pytest.approx(1.00)  # nothing held for the refusal


async def test_the_tightest_limited_budget_decides(store):
    await spend(store, 0.20, user_id="U1")
    await spend(store, 0.50, user_id="U2")
    since = time.time() - HOUR
    user = Budget("user:slack:U1:day", since, 0.30, "slack", "U1")
    unlimited = Budget("user:slack:U1:month", since, None, "slack", "U1")
    everyone = Budget("bot:day", since, 5.00)
    granted, hold_id, left = await store.reserve([user, unlimited, everyone], 0.25, 0.05, hold())
    assert hold_id is not None and granted == pytest.approx(0.10)
    # Only limited scopes are in `left`; the unlimited one never constrains.
    assert left == {"user:slack:U1:day": pytest.approx(0.10), "bot:day": pytest.approx(4.30)}


async def test_no_limit_grants_what_is_wanted(store):
    await spend(store, 100.0)
    granted, hold_id, left = await store.reserve([bot_budget(None)], 0.25, 0.25, hold())
    assert (granted, left) == (0.25, {}) and hold_id is not None
    granted, hold_id, left = await store.reserve([], 0.25, 0.25, hold())
    assert (granted, left) == (0.25, {}) and hold_id is not None


async def test_overspent_leaves_a_negative_room_and_refuses(store):
    await spend(store, 1.25)
    granted, hold_id, left = await store.reserve([bot_budget(1.00)], 0.10, 0.01, hold())
    assert (granted, hold_id) == (0.0, None)
    assert left == {"bot:day": pytest.approx(-0.25)}


async def test_overrides_set_replace_and_remove(store):
    await spend(store, 0.40)
    budget = bot_budget(0.50)
    unlimited = bot_budget(None, scope="bot:month")
    assert await store.spent([budget, unlimited]) == {
        "bot:day": (pytest.approx(0.40), 0.50),
        "bot:month": (pytest.approx(0.40), None),
    }
    await store.set_spend_limit("bot:day", 2.00)
    await store.set_spend_limit("bot:month", 0.45)  # an override limits an unlimited budget
    assert await store.spent([budget, unlimited]) == {
        "bot:day": (pytest.approx(0.40), 2.00),
        "bot:month": (pytest.approx(0.40), 0.45),
    }
    granted, _, left = await store.reserve([unlimited], 1.00, 0.01, hold())
    assert granted == pytest.approx(0.05) and left == {"bot:month": pytest.approx(0.05)}
    granted, _, left = await store.reserve([budget], 1.00, 0.10, hold())
    assert granted == pytest.approx(1.00) and left == {"bot:day": pytest.approx(1.55)}
    await store.set_spend_limit("bot:day", 0.10)  # replaced
    assert (await store.spent([budget]))["bot:day"][1] == 0.10
    granted, hold_id, left = await store.reserve([budget], 0.10, 0.10, hold())
    assert (granted, hold_id) == (0.0, None) and left["bot:day"] < 0
    await store.set_spend_limit("bot:day", None)  # removed: the budget's own limit again
    await store.set_spend_limit("bot:day", None)  # removing twice is no error
    await store.set_spend_limit("bot:month", None)
    assert await store.spent([budget, unlimited]) == {
        "bot:day": (pytest.approx(1.45), 0.50),
        "bot:month": (pytest.approx(1.45), None),
    }
    # Overrides are per scope: another scope's does not apply.
    await store.set_spend_limit("bot:week", 100.0)
    assert (await store.spent([budget]))["bot:day"][1] == 0.50


async def test_holds_count_until_released(store):
    budget = bot_budget(1.00)
    granted, hold_id, _ = await store.reserve([budget], 0.30, 0.30, hold())
    assert granted == pytest.approx(0.30)
    assert hold_id is not None
    assert await spent_on(store, budget) == pytest.approx(0.30)
    # Its call's usage recorded, then the hold released: counted once, as usage.
    await spend(store, 0.12, ago=0.0)
    assert await spent_on(store, budget) == pytest.approx(0.42)
    await store.release(hold_id)
    assert await spent_on(store, budget) == pytest.approx(0.12)
    await store.release(hold_id)  # twice: no error
    await store.release(987_654_321)  # never existed: no error
    assert await spent_on(store, budget) == pytest.approx(0.12)


async def test_a_released_hold_id_is_never_reused(store):
    """A late second release must not drop somebody else's hold."""
    _, first, _ = await store.reserve([], 0.10, 0.10, hold())
    assert first is not None
    await store.release(first)
    _, second, _ = await store.reserve([], 0.20, 0.10, hold())
    assert second is not None and second != first
    await store.release(first)
    assert await spent_on(store, bot_budget(None)) == pytest.approx(0.20)


async def test_holds_count_until_they_expire(store):
    budget = bot_budget(1.00)
    await store.reserve([budget], 0.30, 0.30, hold(ttl=0.5))
    _, lapsed, _ = await store.reserve([budget], 0.20, 0.20, hold(ttl=-1.0))  # expired already
    assert lapsed is not None
    assert await spent_on(store, budget) == pytest.approx(0.30)
    await asyncio.sleep(0.7)
    assert await spent_on(store, budget) == pytest.approx(0.0)
    assert await holds_stored(store) == 2  # expired, not yet cleaned up
    granted, _, left = await store.reserve([budget], 1.00, 1.00, hold())
    assert granted == pytest.approx(1.00) and left == {"bot:day": pytest.approx(1.00)}
    assert await holds_stored(store) == 1  # the expired ones went with that reserve


async def test_holds_created_before_since_do_not_count(store):
    """Holds count from their creation, like usage rows: a period starting after a hold
    was made does not count it (see `Store.spent`)."""
    await store.reserve([], 0.30, 0.30, hold())
    assert await spent_on(store, bot_budget(None, since=time.time() - 10)) == pytest.approx(0.30)
    assert await spent_on(store, bot_budget(None, since=time.time() + 10)) == 0.0


async def test_usage_before_since_does_not_count(store):
    await spend(store, 0.50, ago=2 * HOUR)
    await spend(store, 0.25, ago=60.0)
    assert await spent_on(store, bot_budget(None, since=time.time() - HOUR)) == pytest.approx(0.25)
    assert await spent_on(store, bot_budget(None, since=time.time() - 3 * HOUR)) == (
        pytest.approx(0.75)
    )


async def test_a_user_is_counted_on_their_own_platform_only(store):
    since = time.time() - HOUR
    await spend(store, 0.10, platform="slack", user_id="U1")
    await spend(store, 0.20, platform="discord", user_id="U1", conversation="discord:G1:C1:")
    await spend(store, 0.40, platform="slack", user_id="U2")
    await spend(store, 0.80, platform="slack", user_id="U11")
    await store.reserve([], 0.01, 0.01, hold("slack", "U1"))
    await store.reserve([], 0.02, 0.02, hold("discord", "U1", "discord:G1:C1:"))
    await store.reserve([], 0.04, 0.04, hold("slack", "U2"))
    on_slack = Budget("user:slack:U1:day", since, 1.0, "slack", "U1")
    on_discord = Budget("user:discord:U1:day", since, 1.0, "discord", "U1")
    assert await store.spent([on_slack, on_discord]) == {
        "user:slack:U1:day": (pytest.approx(0.11), 1.0),
        "user:discord:U1:day": (pytest.approx(0.22), 1.0),
    }
    granted, _, left = await store.reserve([on_slack], 1.0, 0.1, hold())
    assert granted == pytest.approx(0.89) and left == {"user:slack:U1:day": pytest.approx(0.89)}


async def test_a_channel_prefix_counts_its_threads_only(store):
    since = time.time() - HOUR
    for cost, conversation in [
        (0.01, "slack:T1:C1:"),  # the channel itself
        (0.02, "slack:T1:C1:1700000000.000100"),  # its threads
        (0.04, "slack:T1:C1:1700000000.000200"),
        (0.08, "slack:T1:C11:"),  # another channel whose id starts alike
        (0.16, "slack:T1:C11:1700000000.000300"),
        (0.32, "slack:T2:C1:"),  # the same channel id in another workspace
        (0.64, "slack:T1:C1"),  # shorter than the prefix
    ]:
        await spend(store, cost, conversation=conversation)
    await store.reserve([], 1.00, 1.00, hold(conversation="slack:T1:C1:1700000000.000100"))
    await store.reserve([], 2.00, 2.00, hold(conversation="slack:T1:C11:1700000000.000300"))
    channel = Budget("channel:slack:T1:C1:day", since, 10.0, prefix="slack:T1:C1:")
    other = Budget("channel:slack:T1:C11:day", since, 10.0, prefix="slack:T1:C11:")
    assert await store.spent([channel, other]) == {
        "channel:slack:T1:C1:day": (pytest.approx(1.07), 10.0),
        "channel:slack:T1:C11:day": (pytest.approx(2.24), 10.0),
    }
    # A literal prefix: `_` and `%` are no wildcards.
    await spend(store, 3.00, conversation="slack:T_:C%:")
    wild = Budget("channel:wild", since, None, prefix="slack:T_:C")
    assert await spent_on(store, wild) == pytest.approx(3.00)
    everything = Budget("all", since, None, prefix="")
    assert await spent_on(store, everything) == pytest.approx(1.27 + 3.00 + 3.00)


async def test_channel_sums_agree_whichever_way_sqlite_reads_them(store, place, monkeypatch):
    """SQLite sums a channel through the time index or the conversation index (see
    SPEND_PROBE); both give the same totals."""
    import bot.store.sqlite as sqlite_backend

    if place[0] != "sqlite":
        pytest.skip("PostgreSQL's planner picks the index itself")
    since = time.time() - HOUR
    for n in range(30):
        ago = n * 190.0 + 5.0  # n <= 18 within the hour, none near its start
        await spend(store, 0.01 * (n + 1), conversation=f"slack:T1:C{n % 3}:{n}", ago=ago)
    budgets = [Budget(f"channel:C{c}", since, 1.0, prefix=f"slack:T1:C{c}:") for c in range(3)]
    totals = []
    for probe in (0, 10**9):  # 0: the conversation index; 10**9: the time index
        monkeypatch.setattr(sqlite_backend, "SPEND_PROBE", probe)
        totals.append(await store.spent(budgets))
    for scope, (spent, limit) in totals[0].items():  # summed in another order
        assert totals[1][scope] == (pytest.approx(spent), limit)
    expected = sum(0.01 * (n + 1) for n in range(19) if n % 3 == 0)
    assert totals[0]["channel:C0"][0] == pytest.approx(expected)


async def test_spent_reports_every_budget(store):
    since = time.time() - HOUR
    await spend(store, 0.30, user_id="U1")
    await spend(store, 0.70, user_id="U2", conversation="slack:T1:C2:")
    _, hold_id, _ = await store.reserve([], 0.05, 0.05, hold("slack", "U1", "slack:T1:C1:9"))
    budgets = [
        Budget("user:slack:U1:day", since, 1.0, "slack", "U1"),
        Budget("channel:slack:T1:C2:day", since, None, prefix="slack:T1:C2:"),
        Budget("bot:day", since, 2.0),
    ]
    assert await store.spent(budgets) == {
        "user:slack:U1:day": (pytest.approx(0.35), 1.0),
        "channel:slack:T1:C2:day": (pytest.approx(0.70), None),
        "bot:day": (pytest.approx(1.05), 2.0),
    }
    assert await store.spent([]) == {}
    assert hold_id is not None
    await store.release(hold_id)
    assert (await store.spent(budgets))["bot:day"][0] == pytest.approx(1.00)


async def test_audit_round_trip(store):
    assert await store.audit_entries() == []
    before = time.time()
    await store.add_audit(AuditEntry("slack", "U1", "limits", "bot:day $5.00", created_at=200.0))
    await store.add_audit(AuditEntry("discord", "U9", "forget", "discord:G1:C1:", 100.0))
    await store.add_audit(AuditEntry("shell", "shell", "system", "prompt: «be brief» ✓"))
    entries = await store.audit_entries()
    assert [(e.platform, e.actor, e.action, e.detail) for e in entries] == [
        ("discord", "U9", "forget", "discord:G1:C1:"),
        ("slack", "U1", "limits", "bot:day $5.00"),
        ("shell", "shell", "system", "prompt: «be brief» ✓"),
    ]
    assert [e.created_at for e in entries[:2]] == [100.0, 200.0]
    assert entries[2].created_at is not None and before <= entries[2].created_at <= time.time()
    assert [e.actor for e in await store.audit_entries(since=150.0)] == ["U1", "shell"]
    assert [e.actor for e in await store.audit_entries(since=200.0)] == ["U1", "shell"]
    assert [e.actor for e in await store.audit_entries(since=time.time() + 10)] == []


async def test_concurrent_reservations_never_overspend(store, place):
    """20 calls at once, $0.10 each, $0.45 left of $1.00: exactly 4 are granted, never 5.

    Half come through a second store on the same database (its own connection or pool,
    as another bot process has), so one process's serialisation is not enough.
    """
    other = await open_backend(*place)
    try:
        for n in range(3):  # a few races, each on its own user's limit
            user = f"U{n}"
            await spend(store, 0.55, user_id=user)
            budgets = [
                Budget(f"user:slack:{user}:day", time.time() - HOUR, 1.00, "slack", user),
                Budget("bot:day", time.time() - HOUR, None),
            ]
            calls = [
                (store if i % 2 else other).reserve(budgets, 0.10, 0.10, hold(user_id=user))
                for i in range(20)
            ]
            results = await asyncio.gather(*calls)
            granted = [r for r in results if r[1] is not None]
            assert len(granted) == 4, results
            assert all(r[0] == pytest.approx(0.10) for r in granted)
            assert all(r == (0.0, None, r[2]) for r in results if r[1] is None)
            assert len({r[1] for r in granted}) == 4
            # Every caller saw a consistent room left: 0.45, 0.35, 0.25, 0.15, then 0.05.
            lefts = sorted(round(r[2][budgets[0].scope], 6) for r in results)
            assert lefts == [0.05] * 16 + [0.15, 0.25, 0.35, 0.45]
            assert await spent_on(other, budgets[0]) == pytest.approx(0.95)
    finally:
        await other.aclose()


async def test_has_spend_limits_follows_the_overrides(store):
    assert await store.has_spend_limits() is False
    await store.set_spend_limit("bot:day", 1.0)
    assert await store.has_spend_limits() is True
    await store.set_spend_limit("bot:day", None)
    assert await store.has_spend_limits() is False
