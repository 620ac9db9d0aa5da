"""What an adapter supplies so the shared delivery can show a reply on its platform.

A `Surface` is one place a reply goes (a channel thread, an interaction's follow-ups,
a terminal). It makes single requests and says which rate budgets each kind of
request spends; everything about *what* to send and *when* lives in `bot/delivery`.
Surfaces whose `Style` has `buttons` also get the reply's `Controls` (the buttons its
last message should carry now) as the `controls` keyword of `post`, `edit` and a native
stream's `finish`; a message posted or edited with `controls=None` carries none.
Errors: raise `TooLong` when the platform refuses a message as too long (the reply is
re-split smaller), `Refused` when it refuses for good (the reply stops there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from bot.delivery.compose import Controls, File, Style
from bot.delivery.plan import Kind
from bot.errors import PlatformRefused


class DeliveryError(Exception):
    """Base of the errors a surface raises."""


class TooLong(DeliveryError):
    """The platform refused a message as too long for it (`code` is its error code)."""

    def __init__(self, code: str = "too_long", *, platform: str = "", channel: str = "") -> None:
        super().__init__(code)
        self.code, self.platform, self.channel = code, platform, channel


# The platform refused a request and will refuse it again (permissions, gone, ...):
# the one bot-level exception every adapter translates its platform's refusals into.
Refused = PlatformRefused


class NativeStream(Protocol):
    """A platform's own streaming message (Slack's chat.*Stream, a terminal).

    Every method reports failure instead of raising; the reply then goes on with
    ordinary posts and edits, starting from `handle` showing `shown`.
    """

    @property
    def handle(self) -> Any:
        """The streamed message (None until started)."""
        ...

    @property
    def shown(self) -> str: ...

    @property
    def failed(self) -> bool: ...

    async def start(self, text: str) -> bool: ...

    async def append(self, text: str) -> bool | None:
        """Send what is new in `text`: True if sent, None if nothing to send yet,
        False if the stream broke."""
        ...

    async def finish(self, text: str, *, controls: Controls | None = None) -> bool: ...

    async def abandon(self) -> None: ...


class Surface(Protocol):
    style: Style
    # Seconds between renewals of the working indicator; 0 when the surface has none.
    indicate_every: float
    # Seconds between two updates of the message being written (a platform courtesy).
    edit_interval: float

    @property
    def stream(self) -> NativeStream | None: ...

    def scopes(self, kind: Kind) -> Sequence[str]:
        """The budgets a request of `kind` spends (see `Scheduler`'s limits)."""
        ...

    async def post(
        self, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> Any: ...

    async def edit(
        self, handle: Any, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> Any:
        """Returns the updated handle, or None to keep the old one."""
        ...

    async def delete(self, handle: Any) -> None: ...

    async def indicate(self, activity: str) -> bool:
        """Show that the bot is working, and on what (`activity`, "" for nothing in
        particular); False when it can't (then it is not renewed)."""
        ...

    async def settle(self, shown: bool) -> None:
        """The reply is over (`shown`: whether anything of it reached people)."""
        ...
