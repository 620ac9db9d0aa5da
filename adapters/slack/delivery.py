"""Where Slack replies go, and Slack's rate limits as the shared scheduler spends them.

Channel threads and DMs alike: Slack's native streaming (chat.startStream, addressed to
the asker) while the workspace's startStream budget allows one and its stopStream budget
holds this reply's stop as well as every other live stream's. Otherwise the first tokens
are posted as soon as the chat.update budget holds this reply's final edit (and every
other live reply's); until then (and while the model thinks) a status shows, and a reply
that never went live is posted complete. Edits come at most once a second per message.
Any streaming error, or an answer longer than one message, goes on with edits.
`msg_too_long` shrinks the messages and re-splits. start, stop, append and update are
separate budgets because Slack limits each method separately.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError

from adapters.slack import buttons
from adapters.slack.api import BOT_TOKEN, NAME, TOKEN_REFUSED, SlackApi, error_code
from adapters.slack.stream import NativeStream
from bot.delivery import Controls, File, Limit, Refused, Scheduler, Style, Thinking, TooLong
from bot.delivery.budget import TokenBucket
from bot.delivery.plan import Kind
from bot.errors import CredentialRefused

log = logging.getLogger("teambot.slack")

# chat.update refuses ~4000 characters; leave room for the neutraliser.
# Tool activity goes to the thread status, which Slack shows as "teambot is searching…".
STYLE = Style(
    limit=3800, emphasis="_", thinking=Thinking.QUOTE, activity_in_text=False, buttons=True
)
EDIT_INTERVAL = 1.0  # seconds between edits of one message
STATUS = "is thinking…"
# Shown in turn under the status while the model works (assistant.threads.setStatus).
LOADING = ("Reading the conversation…", "Thinking it over…", "Writing the answer…")
STATUS_MAX = 100  # characters; a status is one short line under the thread
STATUS_RENEW = 90.0  # seconds; Slack clears a status after two minutes without a message

# Slack's limits per workspace and method (per channel for posts). A token bucket of
# capacity C refilling at r per minute sends at most C + r calls in any minute: 24 + 25
# stays under chat.update's 50 and 10 + 9 under the streams' Tier 2 (20), while a burst
# of replies that start together gets 24 posted and 10 streamed replies live at once.
LIMITS = {
    "post": Limit(lambda: TokenBucket(1, 48)),  # ~1 a second per channel
    "update": Limit(lambda: TokenBucket(24, 25), reserve_finals=True),
    "start": Limit(lambda: TokenBucket(10, 9)),  # chat.startStream, Tier 2
    "stop": Limit(lambda: TokenBucket(10, 9), reserve_finals=True),  # chat.stopStream
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
    """One thread (or DM) that a reply is written into.

    `reuse` are messages of an earlier answer to write over (Regenerate): the reply's
    first posts become edits of them, so the new answer takes the old one's place.
    """

    style = STYLE
    edit_interval = EDIT_INTERVAL

    def __init__(self, api: SlackApi, place: Place, reuse: Sequence[str] = ()) -> None:
        self.api = api
        self.place = place
        self.reuse = list(reuse)
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
            Kind.START: (f"start:{place.team}",),
            Kind.STOP: (f"stop:{place.team}",),
            Kind.ABANDON: (f"stop:{place.team}",),
            Kind.APPEND: (f"append:{place.team}",),
        }

    def ref(self, handle: str) -> str:
        """How bot/journal.py finds this message again after a crash: its ts."""
        return handle

    def scopes(self, kind: Kind) -> Sequence[str]:
        return self._scopes.get(kind, ())

    async def post(
        self, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> str:
        extra = buttons.blocks(controls)
        try:
            if self.reuse:
                handle = self.reuse.pop(0)
                await self.api.update(self.place.channel, handle, text, extra)
                return handle
            return await self.api.post(self.place.channel, self.place.thread_ts, text, extra)
        except SlackApiError as exc:
            raise _failure(exc, self.place.channel) from exc

    async def edit(
        self, handle: str, text: str, files: Sequence[File], *, controls: Controls | None = None
    ) -> None:
        try:
            await self.api.update(self.place.channel, handle, text, buttons.blocks(controls))
        except SlackApiError as exc:
            raise _failure(exc, self.place.channel) from exc

    async def delete(self, handle: str) -> None:
        with contextlib.suppress(SlackApiError):
            await self.api.delete(self.place.channel, handle)

    async def indicate(self, activity: str) -> bool:
        """The thread's status; where Slack has none, :eyes: on the question instead."""
        place = self.place
        loading = () if activity else LOADING
        if await self.api.set_status(place.channel, place.thread_ts, status(activity), loading):
            self.status_shown = True
            return True
        await self.api.react(place.channel, place.user_ts, "eyes", add=True)
        self.reacted = True
        return False

    async def settle(self, shown: bool) -> None:
        place = self.place
        if shown:  # the earlier answer's messages the new one did not need
            for handle in self.reuse:
                await self.delete(handle)
            self.reuse.clear()
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
