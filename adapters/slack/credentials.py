"""Slack refusing the bot's own tokens: one line naming the variable, never a traceback.

At start-up a refused bot or app token ends `teambot run` (a ConfigError, exit 2). While
running, a refused bot token is one warning a minute from the delivery
(`CredentialRefused`); a refused token also shows up in the libraries' own log records
(the Socket Mode client reconnecting, bolt authorizing each event), which `TokenLog`
turns into the same kind of warning. The libraries keep retrying, so the bot works
again once the token does.
"""

from __future__ import annotations

import logging
import re

from slack_sdk.errors import SlackApiError

from adapters.slack.api import NAME, TOKEN_REFUSED, error_code
from bot.errors import ConfigError, CredentialRefused

log = logging.getLogger("teambot.slack")

# How slack-sdk's socket client reports a refused apps.connections.open in its log lines.
_REFUSED_IN_TEXT = re.compile(r"'error': '(" + "|".join(sorted(TOKEN_REFUSED)) + r")'")


def refused_code(exc: BaseException) -> str | None:
    """The code when `exc` is Slack refusing a token itself, else None."""
    if isinstance(exc, SlackApiError):
        code = error_code(exc)
        return code if code in TOKEN_REFUSED else None
    return None


def at_start(variable: str, code: str) -> ConfigError:
    """The one line that ends `teambot run` when Slack refuses a token at start-up."""
    return ConfigError(
        variable, f"Slack refused this token ({code}); copy a current one from the app's settings"
    )


class TokenLog(logging.Filter):
    """Attached to a library's logger: its records about Slack refusing `variable`'s
    token (the Socket Mode client's error and traceback every few seconds, bolt's
    authorization error for every event) become one warning a minute."""

    def __init__(self, variable: str, doing: str) -> None:
        super().__init__()
        self.variable = variable
        self.doing = doing

    def filter(self, record: logging.LogRecord) -> bool:
        code = None
        if record.exc_info and record.exc_info[1] is not None:
            code = refused_code(record.exc_info[1])
        if code is None:
            found = _REFUSED_IN_TEXT.search(record.getMessage())
            code = found.group(1) if found else None
        if code is None:
            return True
        refusal = CredentialRefused(code, platform=NAME, variable=self.variable)
        if refusal.due():
            log.warning("%s; the bot keeps running and retries", refusal.line(self.doing))
        return False


def quiet(logger: logging.Logger, variable: str, doing: str) -> None:
    """Give `logger` a TokenLog (once)."""
    if not any(isinstance(f, TokenLog) for f in logger.filters):
        logger.addFilter(TokenLog(variable, doing))
