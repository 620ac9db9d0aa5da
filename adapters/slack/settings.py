"""Slack's settings, from the same environment as the core's (see bot/config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import ConfigError, integer, url

if TYPE_CHECKING:
    from adapters.slack.adapter import SlackAdapter
    from bot.engine import Engine

NAME = "Slack"
NOT_CONFIGURED = "not configured (SLACK_BOT_TOKEN + SLACK_APP_TOKEN or SLACK_SIGNING_SECRET)"


# Suggested prompts atop a new agent thread (TEAMBOT_SLACK_PROMPTS); Slack shows four.
DEFAULT_PROMPTS = (
    "Summarize this channel",
    "What did we decide about the release last week?",
    "Explain this error message",
    "Draft a short announcement",
)
PROMPTS_MAX = 4
PROMPT_CHARS = 150


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str
    app_token: str = ""
    signing_secret: str = ""
    port: int = 3000
    api_base_url: str = "https://slack.com/api/"
    prompts: tuple[str, ...] = DEFAULT_PROMPTS

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)


def load(env: Mapping[str, str]) -> SlackSettings | None:
    """None unless the bot token and an app token or signing secret are set."""
    token = env.get("SLACK_BOT_TOKEN", "").strip()
    app_token = env.get("SLACK_APP_TOKEN", "").strip()
    secret = env.get("SLACK_SIGNING_SECRET", "").strip()
    if not token or not (app_token or secret):
        return None
    if not token.startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN", "a bot token starting with xoxb-")
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN", "an app-level token starting with xapp-")
    base = url(env, "SLACK_API_BASE_URL", "https://slack.com/api/")
    return SlackSettings(
        bot_token=token,
        app_token=app_token,
        signing_secret=secret,
        port=integer(env, "TEAMBOT_SLACK_PORT", 3000, 1, 65535),
        api_base_url=base if base.endswith("/") else base + "/",
        prompts=prompts(env),
    )


def prompts(env: Mapping[str, str]) -> tuple[str, ...]:
    """TEAMBOT_SLACK_PROMPTS: up to four `|`-separated prompts (unset: the defaults)."""
    raw = env.get("TEAMBOT_SLACK_PROMPTS", "").strip()
    if not raw:
        return DEFAULT_PROMPTS
    found = tuple(p.strip() for p in raw.split("|") if p.strip())
    if not found or len(found) > PROMPTS_MAX or any(len(p) > PROMPT_CHARS for p in found):
        raise ConfigError(
            "TEAMBOT_SLACK_PROMPTS",
            f"1 to {PROMPTS_MAX} prompts separated by |, each at most {PROMPT_CHARS} characters",
        )
    return found


def secrets(settings: SlackSettings) -> list[str]:
    return [settings.bot_token, settings.app_token, settings.signing_secret]


def describe(settings: SlackSettings) -> str:
    if settings.socket_mode:
        return "configured, Socket Mode"
    return f"configured, HTTP on port {settings.port} at /slack/events"


def adapter(engine: Engine, settings: SlackSettings) -> SlackAdapter:
    from adapters.slack.adapter import SlackAdapter

    return SlackAdapter(engine, settings)
