"""Logging set-up: one line per record, text or JSON, secrets scrubbed from everything written."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

# Token shapes that must never reach a log even when we were not told the value.
_TOKEN_PATTERNS = re.compile(
    r"(xox[abpr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Record attributes (from `extra=`) or bound values that JSON lines carry when present.
CONTEXT_FIELDS = ("conversation", "event_id")

# What the current task is working on (set where a reply starts, see `bind`); tasks
# copy their context when created, so a reply's value never reaches another reply.
_bound: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "teambot_log_context", default=None
)


def bind(**fields: str) -> None:
    """Attach `fields` (conversation, event_id) to this task's later JSON log lines."""
    _bound.set({**(_bound.get() or {}), **fields})


class Redactor:
    """Replaces known secrets and token-shaped strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return _TOKEN_PATTERNS.sub("[redacted]", text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces known secrets and token-shaped strings."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self.redact = Redactor(secrets)

    @property
    def secrets(self) -> list[str]:
        return self.redact.secrets

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, the
    conversation and event id when known, and any exception as one string in "exc".

    Each value is redacted before encoding, so escaping cannot hide a secret.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        entry = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        bound = _bound.get() or {}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or bound.get(name)
            if value:
                entry[name] = self.redact(str(value))
        if record.exc_info:
            entry["exc"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = self.redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


def setup(level: str, secrets: Iterable[str] = (), fmt: str = "text") -> None:
    """Log to stderr at `level`, as text lines or (fmt="json") JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    secrets = list(secrets)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(secrets))
        logging.captureWarnings(True)  # warnings too, so every line on stderr is JSON
    else:
        handler.setFormatter(RedactingFormatter(TEXT_FORMAT, secrets))
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
