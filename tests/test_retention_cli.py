"""Retention on a controllable clock, and `teambot export`, `forget` and `audit`."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.retention import Retention
from bot.store import AuditEntry, PlaceInfo, Store, UsageRecord
from bot.store.sqlite import SQLiteStore
from tests.test_cli import cli_env, teambot
from tests.test_store_search import DAY, conv, noted, say

GENERAL = PlaceInfo("discord:G1:C1", "general", "public")
ALICE_DM = PlaceInfo("discord::D1", "Alice", "dm")


async def seeded(tmp_path: Path) -> Path:
    """The CLI's database with Alice (U1) and Bob (U2) on Discord."""
    path = tmp_path / "cli.db"
    store = await SQLiteStore.open(str(path))
    try:
        await noted(store, GENERAL, ALICE_DM)
        await say(store, conv(GENERAL), "alice canary-quince here", author=("U1", "Alice"))
        await say(store, conv(GENERAL), "bob's reply", author=("U2", "Bob"))
        await say(store, conv(ALICE_DM), "alice DM", author=("U1", "Alice"))
        await say(store, conv(ALICE_DM), "bot answer", author=("B0", "bot"), role="assistant")
        await store.record_usage(
            UsageRecord("discord", conv(GENERAL), "U1", "m", 10, 5, 0.01, 100.0, "ok")
        )
    finally:
        await store.aclose()
    return path


async def reopened(path: Path) -> SQLiteStore:
    return await SQLiteStore.open(str(path))


async def test_export_prints_json_and_is_audited(tmp_path):
    path = await seeded(tmp_path)
    env = cli_env(None, tmp_path)
    code, out, err = await teambot("export", "--user", "U1", env=env, cwd=tmp_path)
    assert code == 0, err
    exported = json.loads(out)
    assert exported["user_id"] == "U1" and exported["platform"] is None
    assert [m["text"] for m in exported["messages"]] == [
        "alice canary-quince here",
        "alice DM",
        "bot answer",
    ]
    assert len(exported["usage"]) == 1
    assert out.startswith('{\n  "user_id"')  # indent 2
    code, out, err = await teambot(
        "export", "--user", "U1", "--platform", "slack", env=env, cwd=tmp_path
    )
    assert code == 0, err
    assert json.loads(out)["messages"] == []
    store = await reopened(path)
    try:
        entries = await store.audit_entries()
    finally:
        await store.aclose()
    assert [(e.platform, e.actor, e.action) for e in entries] == [
        ("", "shell", "export"),
        ("slack", "shell", "export"),
    ]
    assert "U1" in entries[0].detail


async def test_forget_deletes_and_is_audited_then_audit_prints_it(tmp_path):
    path = await seeded(tmp_path)
    env = cli_env(None, tmp_path)
    code, out, err = await teambot(
        "forget", "--user", "U1", "--platform", "discord", env=env, cwd=tmp_path
    )
    assert code == 0, err
    assert out.strip() == "Forgot 3 messages of U1 on discord."
    store = await reopened(path)
    try:
        assert [m.text for m in await store.messages(conv(GENERAL))] == ["bob's reply"]
        assert await store.messages(conv(ALICE_DM)) == []
        assert [r.user_id for r in await store.usage_rows()] == ["forgotten"]
        await store.add_audit(
            AuditEntry("slack", "U7", "limits", "old entry", time.time() - 40 * DAY)
        )
    finally:
        await store.aclose()

    code, out, err = await teambot("audit", env=env, cwd=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["time", "(UTC)", "platform", "actor"]
    (line,) = lines[2:]
    assert line.split()[2:5] == ["discord", "shell", "forget"] and "U1: 3 messages" in line
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert line.startswith(today)
    code, out, _ = await teambot("audit", "--days", "60", env=env, cwd=tmp_path)
    assert code == 0 and len(out.splitlines()) == 4 and "old entry" in out
    code, _, err = await teambot("audit", "--days", "-1", env=env, cwd=tmp_path)
    assert code == 2 and "days" in err


async def test_forget_needs_a_platform(tmp_path):
    code, _, err = await teambot(
        "forget", "--user", "U1", env=cli_env(None, tmp_path), cwd=tmp_path
    )
    assert code == 2 and "--platform" in err


async def test_bad_retention_days_is_one_line_and_exit_2(tmp_path):
    for value in ("abc", "0", "36501"):
        env = cli_env(None, tmp_path, TEAMBOT_RETENTION_DAYS=value)
        code, _, err = await teambot("audit", env=env, cwd=tmp_path)
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "TEAMBOT_RETENTION_DAYS" in lines[0], err


def test_retention_days_setting():
    assert load_settings({}).retention_days is None
    assert load_settings({"TEAMBOT_RETENTION_DAYS": " "}).retention_days is None
    assert load_settings({"TEAMBOT_RETENTION_DAYS": "90"}).retention_days == 90
    with pytest.raises(ConfigError, match="TEAMBOT_RETENTION_DAYS"):
        load_settings({"TEAMBOT_RETENTION_DAYS": "-5"})


async def aged(store: Store, now: float) -> None:
    await noted(store, GENERAL)
    for days in (100, 40, 29, 1):
        await say(store, conv(GENERAL), f"{days} days old", ago_days=days)
    await store.set_setting(conv(GENERAL), "memory", "summary")
    await store.record_usage(
        UsageRecord("discord", conv(GENERAL), "U1", "m", 1, 1, 0.5, 1.0, "ok", now - 100 * DAY)
    )


async def test_sweep_with_a_controllable_clock(tmp_path, caplog):
    store = await SQLiteStore.open(str(tmp_path / "r.db"))
    try:
        now = time.time()
        await aged(store, now)
        assert await Retention(store, Settings()).sweep(now + 365 * DAY) == 0  # off: keeps
        retention = Retention(store, Settings(retention_days=30))
        with caplog.at_level("INFO", logger="teambot.retention"):
            assert await retention.sweep(now) == 2
        assert "deleted 2 messages older than 30 days" in caplog.text
        assert [m.text for m in await store.messages(conv(GENERAL))] == [
            "29 days old",
            "1 days old",
        ]
        assert "memory" not in await store.settings(conv(GENERAL))
        assert (await store.usage_totals()).calls == 1
        assert await retention.sweep(now) == 0
        assert await retention.sweep(now + 2 * DAY) == 1  # two days on, the 29-day one goes
    finally:
        await store.aclose()


async def test_background_loop_sweeps_soon_after_start_and_stops(tmp_path):
    store = await SQLiteStore.open(str(tmp_path / "r.db"))
    try:
        await aged(store, time.time())
        off = Retention(store, Settings())
        off.start()
        await off.aclose()
        retention = Retention(store, Settings(retention_days=30), interval=0.05, first_delay=0.01)
        retention.start()
        for _ in range(100):
            if len(await store.messages(conv(GENERAL))) == 2:
                break
            await asyncio.sleep(0.02)
        await retention.aclose()
        assert [m.text for m in await store.messages(conv(GENERAL))] == [
            "29 days old",
            "1 days old",
        ]
    finally:
        await store.aclose()
