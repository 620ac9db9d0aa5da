"""Where Slack replies go, and Slack's rate limits as the shared scheduler spends them.

Channels: the first tokens are posted as soon as the workspace's chat.update budget
holds this reply's final edit as well as every other live reply's; until then (and
while the model thinks) a status shows, and a reply that never went live is posted
complete. Edits come at most once a second per message. `msg_too_long` shrinks the
messages and re-splits. DMs: Slack's native streaming, falling back to edits on any
streaming error or an answer longer than one message.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError

from adapters.slack.api import BOT_TOKEN, NAME, TOKEN_REFUSED, SlackApi, error_code
from adapters.slack.stream import NativeStream
from bot.delivery import File, Limit, Refused, Scheduler, Style, Thinking, TooLong
from bot.delivery.budget import TokenBucket
from bot.delivery.plan import Kind
from bot.errors import CredentialRefused

log = logging.getLogger("teambot.slack")

# chat.update refuses ~4000 characters; leave room for the neutraliser.
# Tool activity goes to the thread status, which Slack shows as "teambot is searching…".
STYLE = Style(limit=3800, emphasis="_", thinking=Thinking.QUOTE, activity_in_text=False)
EDIT_INTERVAL = 1.0  # seconds between edits of one message
STATUS = "is thinking…"
STATUS_MAX = 100  # characters; a status is one short line under the thread
STATUS_RENEW = 90.0  # seconds; Slack clears a status after two minutes without a message

# Slack's limits per workspace (per channel for posts). A token bucket of capacity C
# refilling at r per second sends at most C + 60·r calls in any minute: 12 + 38 stays
# under chat.update's 50, and its burst of 12 lets about ten replies that start
# together all stream.
LIMITS = {
    "post": Limit(lambda: TokenBucket(1, 48)),  # ~1 a second per channel
    "update": Limit(lambda: TokenBucket(12, 38), reserve_finals=True),
    "edges": Limit(lambda: TokenBucket(4, 15), reserve_finals=True),  # start/stopStream
    "append": Limit(lambda: TokenBucket(10, 80)),  # appendStream, Tier 4
}


def limits(scope: str) -> Limit:
    return LIMITS[scope.partition(":")[0]]


def scheduler() -> Scheduler:
    return Scheduler(limits)


@dataclass(frozen=True)
class Place:
    """Where a reply goes and who it is for."""

    channel: str
    thread_ts: str
    user_ts: str
    user: str
    team: str
    native: bool = False


class SlackSurface:
    """One thread (or DM) that a reply is written into."""

    style = STYLE
    edit_interval = EDIT_INTERVAL

    def __init__(self, api: SlackApi, place: Place) -> None:
        self.api = api
        self.place = place
        self.indicate_every = STATUS_RENEW
        self.stream = (
            NativeStream(api, place.channel, place.thread_ts, place.user, place.team)
            if place.native
            else None
        )
        self.reacted = False
        self.status_shown = False
        self._scopes = {
            Kind.POST: (f"post:{place.channel}",),
            Kind.EDIT: (f"update:{place.team}",),
            Kind.START: (f"edges:{place.team}",),
            Kind.STOP: (f"edges:{place.team}",),
            Kind.ABANDON: (f"edges:{place.team}",),
            Kind.APPEND: (f"append:{place.team}",),
        }

    def scopes(self, kind: Kind) -> Sequence[str]:
        return self._scopes.get(kind, ())

    async def post(self, text: str, files: Sequence[File]) -> str:
        try:
            return await self.api.post(self.place.channel, self.place.thread_ts, text)
        except SlackApiError as exc:
            raise _failure(exc, self.place.channel) from exc

    async def edit(self, handle: str, text: str, files: Sequence[File]) -> None:
        try:
            await self.api.update(self.place.channel, handle, text)
        except SlackApiError as exc:
            raise _failure(exc, self.place.channel) from exc

    async def delete(self, handle: str) -> None:
        with contextlib.suppress(SlackApiError):
            await self.api.delete(self.place.channel, handle)

    async def indicate(self, activity: str) -> bool:
        """The thread's status; where Slack has none, :eyes: on the question instead."""
        place = self.place
        if await self.api.set_status(place.channel, place.thread_ts, status(activity)):
            self.status_shown = True
            return True
        await self.api.react(place.channel, place.user_ts, "eyes", add=True)
        self.reacted = True
        return False

    async def settle(self, shown: bool) -> None:
        place = self.place
        if self.reacted:
            await self.api.react(place.channel, place.user_ts, "eyes", add=False)
        elif self.status_shown and not shown:  # nothing posted cleared the status
            await self.api.set_status(place.channel, place.thread_ts, "")


def status(activity: str) -> str:
    """A thread status from an activity line ("Searching…" → "is searching…")."""
    if not activity:
        return STATUS
    text = f"is {activity[:1].lower()}{activity[1:]}"
    return text if len(text) <= STATUS_MAX else text[: STATUS_MAX - 1] + "…"


def _failure(exc: SlackApiError, channel: str) -> Exception:
    """Slack's error as the delivery's: too long (re-split), the bot token refused, or
    refused for good."""
    code = error_code(exc)
    if code == "msg_too_long":
        return TooLong(code, platform=NAME, channel=channel)
    if code in TOKEN_REFUSED:
        return CredentialRefused(code, platform=NAME, variable=BOT_TOKEN, channel=channel)
    return Refused(code, platform=NAME, channel=channel)
