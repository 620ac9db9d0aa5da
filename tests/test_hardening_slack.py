"""Slack credentials refused (at start-up and while running) and unparseable HTTP bodies."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import aiohttp
import pytest

from adapters.slack import SlackAdapter
from bot.engine import Engine
from bot.errors import ConfigError, CredentialRefused
from tests.fakes.mistral import FakeMistral
from tests.fakes.slack.delivery import post_signed
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture, slack_http_fixture  # noqa: F401
from tests.fakes.slack.harness import Harness, slack_settings
from tests.fakes.slack.server import FakeSlack
from tests.test_cli import cli_env

pytestmark = pytest.mark.timeout(90)
TOKEN_CODES = ["invalid_auth", "not_authed", "account_inactive", "token_revoked"]


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    CredentialRefused._warned.clear()


@pytest.mark.parametrize("code", TOKEN_CODES)
@pytest.mark.parametrize(
    ("token", "variable"), [("bot", "SLACK_BOT_TOKEN"), ("app", "SLACK_APP_TOKEN")]
)
async def test_token_refused_at_start_names_its_variable(
    fake_slack: FakeSlack, engine: Engine, code: str, token: str, variable: str
) -> None:
    fake_slack.refuse_token(fake_slack.bot_token if token == "bot" else fake_slack.app_token, code)
    adapter = SlackAdapter(engine, slack_settings(fake_slack), host="127.0.0.1")
    with pytest.raises(ConfigError) as raised:
        await asyncio.wait_for(adapter.run(), 10)
    assert raised.value.variable == variable and code in str(raised.value)


async def test_teambot_run_with_a_refused_bot_token_is_one_line_and_exit_2(
    fake_slack: FakeSlack, fake_mistral: FakeMistral, tmp_path: Path
) -> None:
    fake_slack.refuse_token(fake_slack.bot_token, "invalid_auth")
    env = cli_env(
        fake_mistral,
        tmp_path,
        SLACK_BOT_TOKEN=fake_slack.bot_token,
        SLACK_APP_TOKEN=fake_slack.app_token,
        SLACK_API_BASE_URL=fake_slack.api_url,
        TEAMBOT_LOG_LEVEL="WARNING",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "SLACK_BOT_TOKEN" in lines[0] and "invalid_auth" in lines[0]
    assert fake_slack.bot_token not in err.decode()


async def test_bot_token_revoked_while_running_warns_once_and_answers_when_it_works(
    slack: Harness, fake_mistral: FakeMistral, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = slack.fake
    first = fake.user_message("U1", "C1", "<@UBOT> hello")
    await slack.reply_in("C1", first)
    fake.refuse_token(fake.bot_token, "token_revoked")
    asked = [fake.user_message("U1", "C1", f"<@UBOT> question {n}") for n in range(3)]
    await slack.wait_for(lambda: fake.count("chat.postMessage", ok=False) >= 3, "3 refusals")
    await slack.idle()
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "SLACK_BOT_TOKEN" in warned[0].getMessage() and "token_revoked" in warned[0].getMessage()
    assert "Traceback" not in caplog.text and all(not slack.replies("C1", t) for t in asked)
    fake.refuse_token(fake.bot_token, None)
    ts = fake.user_message("U1", "C1", "<@UBOT> back?")
    assert (await slack.reply_in("C1", ts)).endswith("[Alice]: back?")


async def test_bot_token_refused_before_the_first_event_is_one_warning(
    slack: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = slack.fake
    fake.refuse_token(fake.bot_token, "account_inactive")
    for n in range(3):
        fake.user_message("U1", "C1", f"<@UBOT> question {n}")
    await slack.wait_for(lambda: fake.count("auth.test", ok=False) >= 3, "3 refused checks")
    await slack.idle()
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "SLACK_BOT_TOKEN" in warned[0].getMessage()
    fake.refuse_token(fake.bot_token, None)
    ts = fake.user_message("U1", "C1", "<@UBOT> back?")
    assert (await slack.reply_in("C1", ts)).endswith("[Alice]: back?")


async def test_app_token_refused_while_running_warns_once_and_reconnects_when_it_works(
    slack: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = slack.fake
    fake.refuse_token(fake.app_token, "invalid_auth")
    await fake.hub.drop()
    await slack.wait_for(lambda: fake.count("apps.connections.open", ok=False) >= 2, "retries")
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "SLACK_APP_TOKEN" in warned[0].getMessage() and warned[0].exc_info is None
    assert "Traceback" not in caplog.text
    fake.refuse_token(fake.app_token, None)
    await slack.wait_for(lambda: fake.hub.connections, "a new socket", within=20)
    ts = fake.user_message("U1", "C1", "<@UBOT> reconnected?")
    assert await slack.reply_in("C1", ts) == "echo: [Alice]: reconnected?"


# Slack over HTTP: the signature first, then the body.


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("this is not json", "application/json"),
        ("{not json either", "application/json"),
        ("[1, 2, 3]", "application/json"),
        ("\x00\x01 binary garbage", "application/octet-stream"),
        ("plain words, no form", "text/plain"),
        ("foo=bar&baz=1", "application/x-www-form-urlencoded"),
        ("payload=not-json", "application/x-www-form-urlencoded"),
    ],
)
async def test_http_bad_bodies_are_401_unsigned_and_400_signed_never_500(
    slack_http: Harness, caplog: pytest.LogCaptureFixture, body: str, content_type: str
) -> None:
    fake = slack_http.fake
    async with aiohttp.ClientSession() as session:
        unsigned, _ = await post_signed(
            session, fake.http_url, body, secret=fake.signing_secret,
            content_type=content_type, signature="",
        )  # fmt: skip
        forged, _ = await post_signed(
            session, fake.http_url, body, secret="wrong-secret", content_type=content_type
        )
        signed, _ = await post_signed(
            session, fake.http_url, body, secret=fake.signing_secret, content_type=content_type
        )
        stale, _ = await post_signed(
            session, fake.http_url, body, secret=fake.signing_secret,
            content_type=content_type, timestamp="not-a-number",
        )  # fmt: skip
    assert (unsigned, forged, signed, stale) == (401, 401, 400, 401)
    assert "Traceback" not in caplog.text


async def test_http_still_answers_after_bad_bodies(slack_http: Harness) -> None:
    fake = slack_http.fake
    async with aiohttp.ClientSession() as session:
        await post_signed(session, fake.http_url, "junk", secret=fake.signing_secret)
    ts = fake.user_message("U1", "C1", "<@UBOT> still fine?")
    assert await slack_http.reply_in("C1", ts) == "echo: [Alice]: still fine?"
    fake.slash_command("/usage", "", "U1", "C1")
    await slack_http.wait_for(lambda: fake.responses, "the slash command's answer")
