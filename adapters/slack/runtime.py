"""What the Slack listeners share: the engine, the Web API, names, identity, downloads."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.agent import Agent, Viewing
from adapters.slack.api import SlackApi, error_code
from adapters.slack.delivery import Place, SlackSurface, scheduler
from adapters.slack.groups import Groups
from adapters.slack.inbound import Incoming
from adapters.slack.people import Names
from adapters.slack.places import Channels
from bot.delivery import Reply, Scheduler, deliver, say
from bot.engine import Engine
from bot.errors import CredentialRefused
from bot.types import Author, ConversationKey, Message, ReplyEvent, Started
from bot.types import Place as Where

log = logging.getLogger("teambot.slack")


SLACK_FILE_HOSTS = (".slack.com", ".slack-gov.com", ".slack-edge.com")
FAILED = "Sorry, something went wrong while answering; the details are in the bot's log."


REFUSED = {
    "not_in_channel": "I'm not a member of this channel; invite me with `/invite`.",
    "channel_not_found": "I can't see this channel; invite me with `/invite`.",
    "is_archived": "This channel is archived, so I can't answer in it.",
    "restricted_action": "I'm not allowed to post in this channel.",
    "msg_too_long": "My answer was too long for Slack, even split into several messages.",
}


def refused_sentence(code: str) -> str:
    """What the asker is told privately when Slack refused the answer."""
    reason = REFUSED.get(code, "Slack refused my answer here.")
    return f"I couldn't answer you here: {reason} ({code})"


class DownloadError(Exception):
    pass


# Threads the bot takes part in, remembered in memory; older ones are asked of the store.
ENGAGED_REMEMBERED = 10_000


class RecentKeys:
    """A set that keeps only the `limit` most recently used keys."""

    def __init__(self, limit: int) -> None:
        self._keys: OrderedDict[ConversationKey, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, key: object) -> bool:
        if key not in self._keys:
            return False
        self._keys.move_to_end(key)  # type: ignore[arg-type]
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: ConversationKey) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)


@dataclass
class Runtime:
    engine: Engine
    client: AsyncWebClient
    api: SlackApi
    names: Names
    channels: Channels
    bot_token: str
    bot_user_id: str = ""
    bot_id: str = ""
    session: aiohttp.ClientSession | None = None
    engaged: RecentKeys = field(default_factory=lambda: RecentKeys(ENGAGED_REMEMBERED))
    pacer: Scheduler = field(default_factory=scheduler)  # every reply's calls, paced together
    groups: Groups | None = None  # user groups, for TEAMBOT_ALLOWED_ROLES
    agent: Agent | None = None  # the agent view's prompts, titles and viewed channels
    _stops: set[asyncio.Task[None]] = field(default_factory=set)

    async def download(self, url: str) -> bytes:
        """A private file, with the bot token (without it Slack serves a login page)."""
        if self.session is None or not url:
            raise DownloadError("no download URL")
        if not self._trusted(url):
            raise DownloadError(f"not a Slack file URL: {urlsplit(url).hostname}")
        headers = {"Authorization": f"Bearer {self.bot_token}"}
        async with self.session.get(url, headers=headers) as response:
            if response.status != 200:
                raise DownloadError(f"HTTP {response.status}")
            return await response.read()

    async def complete_files(self, files: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        """Slack Connect events carry stubs (`file_access: check_file_info`); ask files.info."""
        complete = []
        for file in files:
            if file.get("file_access") == "check_file_info" and file.get("id"):
                try:
                    response = await self.client.files_info(file=str(file["id"]))
                    file = dict(response.get("file") or file)
                except SlackApiError as exc:
                    log.info("files.info failed for %s: %s", file.get("id"), error_code(exc))
            complete.append(file)
        return tuple(complete)

    def _trusted(self, url: str) -> bool:
        """Only Slack (or the configured API host) ever sees the bot token."""
        host = (urlsplit(url).hostname or "").lower()
        api_host = (urlsplit(str(self.client.base_url)).hostname or "").lower()
        return host == api_host or host.endswith(SLACK_FILE_HOSTS)

    async def engage(self, channel: ConversationKey, thread: ConversationKey, seed: bool) -> None:
        """Make a thread a conversation: channel context first, channel settings as defaults.

        Slash commands cannot run inside threads, so `/reasoning` and `/system` typed in
        the channel are what new threads there start with.
        """
        if thread in self.engaged:
            return
        self.engaged.add(thread)
        if seed:
            await self.engine.seed(channel, thread)
        await self.engine.inherit_settings(channel, thread)

    async def author(self, user: str) -> Author:
        """A person, named, and whether they are a workspace admin or owner (one users.info
        lookup, cached)."""
        name = await self.names.get(user)
        return Author(user, name, platform_admin=await self.names.is_admin(user))

    async def asker(
        self, user: str, channel: str, channel_type: str = ""
    ) -> tuple[Author, Where | None, tuple[str, ...]]:
        """Who asks from where, as the engine's access rules and tools need it: the person
        (name, admin flag), the channel's place, their user groups; looked up together."""
        author, where, roles = await asyncio.gather(
            self.author(user), self.channels.place(channel, channel_type), self.roles(user)
        )
        return author, where, roles

    async def roles(self, user: str) -> tuple[str, ...]:
        """The user groups `user` is in; asked of Slack only when TEAMBOT_ALLOWED_ROLES is
        set, since nothing else uses them."""
        if not self.engine.settings.allowed_roles or not user:
            return ()
        if self.groups is None:
            self.groups = Groups(self.client)
        return await self.groups.of(user)

    async def answer(self, message: Message, place: Place) -> None:
        """Stream the engine's reply to `message` into `place`; never raises."""
        await self.show(self.engine.reply(message), SlackSurface(self.api, place), message.id)

    async def show(
        self, events: AsyncIterator[ReplyEvent], surface: SlackSurface, what: str
    ) -> None:
        """Deliver a reply's `events` on `surface`, then note where its answer shows (for
        links to it) and tell the asker privately if Slack refused it; never raises."""
        place = surface.place
        try:
            reply = await deliver(self.pacer, surface, self._stoppable(events, surface))
        except Exception:
            log.exception("answering %s in %s failed", what, place.channel)
            await self.say(place, FAILED)
            return
        if reply.answer_id and reply.handles:
            try:
                await self.engine.answer_posted(reply.answer_id, str(reply.handles[0]))
            except Exception:
                log.exception("could not note where answer %d shows", reply.answer_id)
        if isinstance(reply.refusal, CredentialRefused):
            return  # nothing can reach the asker until the token works again
        if reply.refusal is not None:
            await self.tell_refused(place, reply.refusal.code)
        elif reply.error and not reply.visible:
            await self.say(place, FAILED)

    async def _stoppable(
        self, events: AsyncIterator[ReplyEvent], surface: SlackSurface
    ) -> AsyncIterator[ReplyEvent]:
        """`events`, with Slack's own stop of a native stream (`stopped_by_user`) wired to
        Engine.stop for the question they answer, as the Stop button is."""
        async for event in events:
            if isinstance(event, Started) and event.question and surface.stream is not None:
                stop = functools.partial(self._spawn_stop, event.question, surface.place.user)
                surface.stream.on_user_stop = stop
            yield event

    def _spawn_stop(self, question: int, user: str) -> None:
        task = asyncio.create_task(self._stop_for(question, user))
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    async def _stop_for(self, question: int, user: str) -> None:
        try:
            await self.engine.stop(question, await self.author(user))
        except Exception:
            log.exception("stopping question %d for %s failed", question, user)

    async def summarize_viewed(
        self, viewing: Viewing, author: Author, roles: tuple[str, ...], place: Place
    ) -> None:
        """ "Summarize this channel" asked next to a channel: that channel's summary, read
        with the asker's scope from where they ask (their DM with the bot plus the
        workspace's public channels), so a channel they may not read stays unread."""
        where = await self.channels.place(place.channel, "im")
        key = ConversationKey("slack", viewing.team or place.team, viewing.channel)
        result = await self.engine.command(
            key,
            author,
            "summarize",
            "",
            is_group=True,
            place=where,
            spaces=(key.space,),
            roles=roles,
            channels=(viewing.channel,),
        )
        await self.say(place, result.text)

    async def with_viewed_channel(self, viewing: Viewing, text: str) -> str:
        """The question with a note naming the channel its asker is looking at, so that
        "this channel" and searches point there (the tools still read only their scope)."""
        try:
            where = await self.channels.place(viewing.channel, "")
        except Exception:
            log.exception("could not name the viewed channel %s", viewing.channel)
            return text
        name = f"#{where.name}" if where and where.name else f"<#{viewing.channel}>"
        return f'{text}\n\n(I am looking at {name} in Slack; "this channel" means {name}.)'

    async def tell_refused(self, place: Place, code: str) -> None:
        """Slack refused the answer in `place`: say so to the asker alone, once, where
        Slack allows that (it is logged already)."""
        if place.user:
            await self.api.ephemeral(
                place.channel, place.thread_ts, place.user, refused_sentence(code)
            )

    async def post(self, key: ConversationKey, text: str) -> None:
        """Post `text` into a channel (or thread) unprompted, e.g. a daily digest."""
        place = Place(key.channel, key.thread, "", "", key.space)
        reply = await self.say(place, text)
        if reply.error:
            raise RuntimeError(f"Slack refused the post: {reply.error}")

    async def say(self, place: Place, text: str) -> Reply:
        """Post `text` as a whole message; never raises (`Reply.error` says why it failed)."""
        return await say(self.pacer, SlackSurface(self.api, replace(place, native=False)), text)

    def place_for(self, incoming: Incoming, thread_ts: str) -> Place:
        return Place(
            channel=incoming.channel,
            thread_ts=thread_ts,
            user_ts=incoming.ts,
            user=incoming.user,
            team=incoming.team,
            # Streams in channels are addressed to the asker (Slack requires a recipient).
            native=bool(incoming.user and incoming.team),
        )
