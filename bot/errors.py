"""The exceptions teambot raises on purpose.

    TeambotError
    ├── ConfigError            bad or missing configuration (exit code 2)
    └── ModelError             the model call failed; `user_message` is safe to show
        ├── SpendLimitReached  a spending limit leaves no room (not an API error at all)
        ├── ModelAuthError     401/403: key missing, wrong, or not allowed this model
        ├── ModelRateLimited   429 after retries (rate limit or spend cap)
        ├── ContextTooLong     400: prompt larger than the model accepts
        ├── ModelBadRequest    other 400/422: our request was wrong
        └── ModelUnavailable   5xx, connect errors, timeouts after retries
            └── StreamCut      the stream broke after some text had arrived

Anything else escaping the engine is a bug and is logged with its traceback.
"""

from __future__ import annotations


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
