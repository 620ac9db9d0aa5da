"""The exceptions teambot raises on purpose.

    TeambotError
    ├── ConfigError            bad or missing configuration (exit code 2)
    ├── PlatformRefused        a chat platform refused a request for good (logged, not raised on)
    │   └── CredentialRefused  ... because it refused the bot's token itself
    └── ModelError             the model call failed; `user_message` is safe to show
        ├── SpendLimitReached  a spending limit leaves no room (not an API error at all)
        ├── ModelAuthError     401/403: key missing, wrong, or not allowed this model
        ├── ModelRateLimited   429 after retries (rate limit or spend cap)
        ├── ContextTooLong     400: prompt larger than the model accepts
        ├── ModelBadRequest    other 400/422: our request was wrong
        └── ModelUnavailable   5xx, connect errors, timeouts after retries
            ├── StreamCut      the stream broke after some text had arrived
            └── ModelCircuitOpen  the endpoint's circuit breaker is open (bot/breaker.py)

Anything else escaping the engine is a bug and is logged with its traceback.
"""

from __future__ import annotations

import time
from typing import ClassVar


class TeambotError(Exception):
    """Base of every error teambot raises deliberately."""


class ConfigError(TeambotError):
    """A configuration variable is missing or invalid.

    `str(error)` is one line naming the variable and what it accepts.
    """

    def __init__(self, variable: str, accepts: str) -> None:
        super().__init__(f"{variable}: {accepts}")
        self.variable = variable
        self.accepts = accepts


class PlatformRefused(TeambotError):
    """A chat platform refused a request and will refuse it again: the bot is not in
    the channel, may not post there, the channel is archived or gone, the message is
    too long even when split. Adapters raise it with the platform's own error `code`
    ("not_in_channel", "50013"); `str(error)` is one line for the log.
    """

    def __init__(
        self, code: str, *, platform: str = "", channel: str = "", detail: str = ""
    ) -> None:
        where = f" in {channel}" if channel else ""
        by = f"{platform} refused" if platform else "refused"
        super().__init__(f"{by}{where}: {code}" + (f" ({detail})" if detail else ""))
        self.code = code
        self.platform = platform
        self.channel = channel
        self.detail = detail

    def line(self, action: str) -> str:
        """One log line: who refused what, where, with the platform's code."""
        where = f" in {self.channel}" if self.channel else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.platform or 'the platform'} refused {action}{where}: {self.code}{detail}"


class CredentialRefused(PlatformRefused):
    """The platform refused the bot's credential itself (revoked, invalid, deactivated):
    nothing works until an admin fixes `variable`, so it is worth one warning a minute,
    not one per message (see `due`)."""

    WARN_EVERY_S = 60.0
    _warned: ClassVar[dict[str, float]] = {}

    def __init__(self, code: str, *, platform: str, variable: str, channel: str = "") -> None:
        super().__init__(code, platform=platform, channel=channel, detail=f"check {variable}")
        self.variable = variable

    def due(self, now: float | None = None) -> bool:
        """Whether to warn about this credential now (at most once a minute each)."""
        now = time.monotonic() if now is None else now
        last = self._warned.get(self.variable)
        if last is not None and now - last < self.WARN_EVERY_S:
            return False
        self._warned[self.variable] = now
        return True


class ModelError(TeambotError):
    """The model could not answer. The message (str) is for logs; `user_message` is for people."""

    user_message = "The model could not answer right now. Please try again."

    def __init__(self, detail: str = "", *, status: int | None = None) -> None:
        super().__init__(detail or self.user_message)
        self.status = status


class SpendLimitReached(ModelError):
    """A spending limit leaves no room for the call; the detail says which, for people too."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.user_message = sentence


class ModelAuthError(ModelError):
    user_message = "The bot's model API key was rejected; an admin needs to fix the configuration."


class ModelRateLimited(ModelError):
    user_message = "The model is rate limited right now. Please try again in a minute."


class ContextTooLong(ModelError):
    user_message = "That message is too long for the model's context. Try a shorter one."


class ModelBadRequest(ModelError):
    user_message = "The model rejected the request. An admin can find the details in the logs."


class ModelUnavailable(ModelError):
    user_message = "The model is unavailable right now. Please try again shortly."


class StreamCut(ModelUnavailable):
    """The connection broke mid-answer; the text received so far is kept by the engine."""

    user_message = "The answer was cut off because the model connection broke."


class ModelCircuitOpen(ModelUnavailable):
    """The endpoint failed call after call, so the breaker answers at once instead of
    sending the request (bot/breaker.py)."""

    user_message = "The model is down and will be tried again shortly; please ask in a minute."
