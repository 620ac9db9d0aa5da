"""Logging set-up: one line per record, secrets scrubbed from everything written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

# Token shapes that must never reach a log even when we were not told the value.
_TOKEN_PATTERNS = re.compile(
    r"(xox[abpr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces known secrets and token-shaped strings."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return _TOKEN_PATTERNS.sub("[redacted]", text)


def setup(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO (every gateway event, every HTTP request) drowns our lines.
    for noisy in (
        *("discord", "slack_bolt", "slack_sdk", "httpx", "aiohttp.access"),
        # The MCP SDK's HTTP client logs every URL (which may carry a token) at INFO.
        *("httpx2", "mcp"),
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
