"""TEAMBOT_LOG_FORMAT=json: every stderr line of `teambot run` is one JSON object, with the
conversation and event id where a reply is being written, and never a secret."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from datetime import datetime
from pathlib import Path

import pytest

from bot import logs
from bot.config import load_settings
from bot.errors import ConfigError
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.server import BOT_TOKEN
from tests.fakes.mistral import Error, FakeMistral, error_body
from tests.test_cli import KEY
from tests.test_metrics import discord_env, running, until

pytestmark = pytest.mark.timeout(90)

SLACK_SHAPED = "xoxb-1234-5678-abcdefghijkl"
FIELDS = {"time", "level", "logger", "message"}


async def test_run_logs_one_redacted_json_object_per_line(tmp_path: Path):
    async with FakeMistral() as model:
        # The API's error text carries secrets the model client does not know about: the
        # Discord token and a Slack-shaped token. Only the log formatter can catch them.
        leak = f"bad request near {BOT_TOKEN} and {SLACK_SHAPED} and {KEY}"
        model.enqueue(Error(400, error_body(leak, "invalid_request_error")))
        discord = FakeDiscord()
        await discord.start()
        env = discord_env(model, discord, tmp_path, TEAMBOT_LOG_FORMAT="json")
        try:
            async with running(env, tmp_path) as process:
                await until(
                    lambda: discord.gateway.identifies and discord.gateway.connected.is_set(),
                    "the bot's gateway session",
                )
                question = await discord.user_message(
                    discord.general, discord.alice, "please fail", mention=True
                )
                await until(lambda: discord.replies_to(question["id"]), "the failure notice")
                process.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(process.communicate(), 15)
        finally:
            await discord.close()
    assert process.returncode == 0
    text = err.decode()
    for secret in (BOT_TOKEN, SLACK_SHAPED, KEY):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert lines and all(set(entry) >= FIELDS for entry in lines)
    for entry in lines:
        assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0
    [failure] = [e for e in lines if "bad request near" in e["message"]]
    assert failure["level"] == "WARNING"
    assert failure["message"].count("[redacted]") == 3
    assert failure["conversation"].startswith("discord:")
    assert discord.general in failure["conversation"]
    assert failure["event_id"] == question["id"]
    [outcome] = [e for e in lines if e["message"].startswith("ModelBadRequest in ")]
    assert outcome["conversation"] == failure["conversation"]
    # Lines outside any reply carry no conversation.
    [stopping] = [e for e in lines if e["message"].startswith("shutting down")]
    assert stopping["logger"] == "teambot" and "conversation" not in stopping


def test_exceptions_are_one_redacted_string_and_extra_fields_are_kept():
    formatter = logs.JsonFormatter(["sk-configured-secret"])
    logger = logging.getLogger("teambot.test")
    try:
        raise RuntimeError("boom with sk-configured-secret inside")
    except RuntimeError:
        record = logger.makeRecord(
            "teambot.test",
            logging.ERROR,
            __file__,
            1,
            'failed "%s"',
            ("quoted\nvalue",),
            sys.exc_info(),
            extra={"conversation": "slack:T1:C1:", "event_id": "Ev123"},
        )
    entry = json.loads(formatter.format(record))
    assert entry["message"] == 'failed "quoted\nvalue"'
    assert entry["level"] == "ERROR" and entry["logger"] == "teambot.test"
    assert entry["conversation"] == "slack:T1:C1:" and entry["event_id"] == "Ev123"
    assert entry["exc"].startswith("Traceback") and "RuntimeError" in entry["exc"]
    assert "sk-configured-secret" not in entry["exc"] and "[redacted]" in entry["exc"]
    assert "\n" not in formatter.format(record)  # one line, whatever the message holds


async def test_bound_context_stays_in_its_own_task():
    formatter = logs.JsonFormatter([])
    seen: dict[str, dict[str, str]] = {}

    def line(name: str) -> dict[str, str]:
        record = logging.LogRecord("teambot", logging.INFO, __file__, 1, name, (), None)
        return json.loads(formatter.format(record))

    async def reply(name: str) -> None:
        logs.bind(conversation=f"test:T1:{name}:", event_id=f"m-{name}")
        await asyncio.sleep(0)
        seen[name] = line(name)

    await asyncio.gather(asyncio.create_task(reply("a")), asyncio.create_task(reply("b")))
    assert seen["a"]["conversation"] == "test:T1:a:" and seen["a"]["event_id"] == "m-a"
    assert seen["b"]["conversation"] == "test:T1:b:" and seen["b"]["event_id"] == "m-b"
    assert "conversation" not in line("outside")


def test_log_format_is_validated():
    assert load_settings({}).log_format == "text"
    assert load_settings({"TEAMBOT_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError) as caught:
        load_settings({"TEAMBOT_LOG_FORMAT": "xml"})
    assert caught.value.variable == "TEAMBOT_LOG_FORMAT"
