"""A loopback Discord: the REST API and gateway websocket that discord.py talks to.

Start it, point a client at `api_base_url` / `gateway_url`, then play users with
`user_message`, `user_edit`, `user_delete`, `slash`, `message_command`, `click` (a
button) and `submit_modal`, and read what the bot did from `posted`, `interactions`,
`threads_started`, `requests` and the 429 counters. `foreign_channel` is a channel of a
server the bot is not in, reached only through a user install's interactions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.discord import payloads
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.ratelimit import Limits
from tests.fakes.discord.records import InteractionRecord, Posted, RequestLog
from tests.fakes.discord.rest import Rest

BOT_TOKEN = "fake-bot-token"


class FakeDiscord:
    def __init__(
        self,
        *,
        message_content_allowed: bool = True,
        enforce_limits: bool = True,
        channels: int = 2,
        shards: int = 1,
    ) -> None:
        self.message_content_allowed = message_content_allowed
        self.recommended_shards = shards  # what GET /gateway/bot advises
        self.bot_gateway_url: str | None = None  # GET /gateway/bot's url (default: ours)
        self.max_concurrency = 1  # IDENTIFY buckets (shard id % this), as /gateway/bot says
        # When set, an IDENTIFY sooner than this after the last one of its bucket is refused
        # with Invalid Session, as Discord does; off by default so tests may restart quickly.
        self.identify_window_s = 0.0
        self.limits = Limits(enabled=enforce_limits)
        self.app_id = payloads.snowflake()
        self.bot_id = self.app_id
        self.bot_user = payloads.user(self.bot_id, "teambot", bot=True)
        self.users: dict[str, dict[str, Any]] = {self.bot_id: self.bot_user}
        self.outsiders: set[str] = set()  # users who are not members of the guild
        self.roles: dict[str, dict[str, Any]] = {}  # the guild's roles besides @everyone's
        self.member_roles: dict[str, list[str]] = {}  # user id -> role ids
        self.guild_id = payloads.snowflake()
        self.bot_role_id = payloads.snowflake()
        self.guilds: dict[str, dict[str, Any]] = {
            self.guild_id: {"name": "Team", "channels": {}, "threads": {}}
        }
        self.channels: dict[str, dict[str, Any]] = {}
        self.by_name: dict[str, str] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.posted: dict[str, Posted] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.threads_started: list[str] = []  # threads the bot started, by id
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.command_syncs: list[tuple[str, list[dict[str, Any]]]] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.requests: list[RequestLog] = []
        self.rate_limited = 0
        self.injected_429s = 0
        self.pending_429s: dict[str, list[float]] = {}
        self.outage_logins = 0  # answer this many logins with 503, as during an outage
        self.gateway = Gateway(self)
        self.rest = Rest(self)
        self.owner_id = self.add_user("owner")
        self.alice = self.add_user("alice")
        self.bob = self.add_user("bob")
        self.general = self.add_channel("general")
        for i in range(1, channels):
            self.add_channel("random" if i == 1 else f"room-{i}")
        self.thread = self.add_thread("general", "design")
        self.staff = self.add_channel("staff", private=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- topology -------------------------------------------------------------

    def add_user(self, name: str) -> str:
        uid = payloads.snowflake()
        self.users[uid] = payloads.user(uid, name)
        return uid

    def add_role(self, name: str, permissions: int = 0) -> str:
        """A role in the guild (add it before the bot connects: roles reach discord.py's
        cache with GUILD_CREATE)."""
        rid = payloads.snowflake()
        self.roles[rid] = payloads.role(rid, name, permissions, position=len(self.roles) + 2)
        return rid

    def give_role(self, user_id: str, role_id: str) -> None:
        """The member holds the role from their next message or command on."""
        self.member_roles.setdefault(user_id, []).append(role_id)

    def member(self, user_id: str) -> dict[str, Any]:
        """The member object of a user, with their role ids, as Discord sends it."""
        roles = list(self.member_roles.get(user_id, []))
        if user_id == self.bot_id:
            roles.append(self.bot_role_id)
        return payloads.member(self.users[user_id], roles)

    def permissions_of(self, user_id: str) -> str:
        """A member's server-wide permissions: the owner has all, else @everyone's and their
        roles' bits, all of them with Administrator (channel overwrites are left out)."""
        if user_id == self.owner_id:
            return payloads.ALL_PERMISSIONS
        bits = int(payloads.EVERYONE_PERMISSIONS)
        for rid in self.member_roles.get(user_id, []):
            bits |= int(self.roles[rid]["permissions"])
        return payloads.ALL_PERMISSIONS if bits & payloads.ADMINISTRATOR else str(bits)

    def add_guild(self, name: str, *, shard: tuple[int, int] | None = None) -> str:
        """Another server the bot is in (add it before the bot connects), with every user
        as a member; `shard=(id, count)` picks an id whose events go to that shard."""
        gid = payloads.snowflake()
        if shard is not None:
            shard_id, count = shard
            # The shard is the snowflake's millisecond timestamp modulo the count.
            ms = int(gid) >> 22
            ms -= (ms - shard_id) % count
            gid = str((ms << 22) | (int(gid) & 0x3FFFFF))
        self.guilds[gid] = {"name": name, "channels": {}, "threads": {}}
        return gid

    def add_category(self, name: str) -> str:
        """A channel category (type 4); `add_channel(..., category=id)` files channels in it."""
        cid = payloads.snowflake()
        self.channels[cid] = payloads.category_channel(cid, self.guild_id, name)
        self.guilds[self.guild_id]["channels"][cid] = self.channels[cid]
        self.by_name[name] = cid
        return cid

    def add_channel(
        self,
        name: str,
        *,
        private: bool = False,
        category: str | None = None,
        guild: str | None = None,
    ) -> str:
        """A text channel (in the first guild unless `guild` is given); a private one hides
        itself from @everyone (whose role id is the guild's id), as Discord's channel
        permission overwrites do."""
        cid = payloads.snowflake()
        gid = guild or self.guild_id
        self.channels[cid] = payloads.text_channel(cid, gid, name, category)
        if private:
            deny_view = {"id": gid, "type": 0, "allow": "0", "deny": str(1 << 10)}
            self.channels[cid]["permission_overwrites"] = [deny_view]
        self.guilds[gid]["channels"][cid] = self.channels[cid]
        self.by_name[name] = cid
        return cid

    async def make_private(self, channel_id: str) -> None:
        """Hide a channel from @everyone, as a moderator does, and tell the bot."""
        gid = self.channels[channel_id]["guild_id"]
        deny_view = {"id": gid, "type": 0, "allow": "0", "deny": str(1 << 10)}
        self.channels[channel_id]["permission_overwrites"] = [deny_view]
        await self.gateway.dispatch("CHANNEL_UPDATE", dict(self.channels[channel_id]))

    def add_thread(self, parent: str, name: str) -> str:
        tid = payloads.snowflake()
        gid = self.channels[self.by_name[parent]]["guild_id"]
        data = payloads.thread_channel(tid, gid, self.by_name[parent], name, self.owner_id)
        self.channels[tid] = data
        self.guilds[gid]["threads"][tid] = data
        self.by_name[name] = tid
        return tid

    def foreign_channel(self, name: str) -> str:
        """A text channel of a server the bot is not in: Discord never tells the bot about
        it, and its messages and threads refuse the bot (50001 Missing Access)."""
        gid, cid = payloads.snowflake(), payloads.snowflake()
        self.channels[cid] = payloads.text_channel(cid, gid, name)
        self.rest.refuse(cid, 50001)
        return cid

    def put_message(self, channel_id: str, author_id: str, text: str) -> dict[str, Any]:
        """A message that exists without the bot being told (e.g. in a foreign channel)."""
        data = self._message_payload(channel_id, author_id, text)
        self.messages[data["id"]] = data
        return data

    def dm(self, user_id: str) -> str:
        for cid, ch in self.channels.items():
            if ch["type"] == 1 and ch["recipients"][0]["id"] == user_id:
                return cid
        cid = payloads.snowflake()
        self.channels[cid] = payloads.dm_channel(cid, self.users[user_id])
        return cid

    def guild_payload(self, gid: str) -> dict[str, Any]:
        g = self.guilds[gid]
        members = [self.member(uid) for uid in self.users]
        roles = [payloads.bot_role(self.bot_role_id, "teambot", self.bot_id), *self.roles.values()]
        return payloads.guild(
            gid,
            g["name"],
            self.owner_id,
            list(g["channels"].values()),
            list(g["threads"].values()),
            members,
            roles,
        )

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/resume-gateway", self.gateway.handle)
        app.router.add_get("/attachments/{aid}/{name}", self._cdn)
        self.rest.install(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = await self.listen()

    async def listen(self) -> int:
        """Serve on one more port too and return it: clients given different ports (see
        `api_base_url_at`) are told apart in `requests` and the gateway's `identified`."""
        assert self._runner is not None, "start() first"
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return port

    async def close(self) -> None:
        await self.gateway.drop(1001)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @staticmethod
    def api_base_url_at(port: int) -> str:
        return f"http://127.0.0.1:{port}/api/v10"

    @staticmethod
    def gateway_url_at(port: int) -> str:
        return f"ws://127.0.0.1:{port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/resume-gateway"

    async def _cdn(self, request: web.Request) -> web.Response:
        _name, data = self.files[request.match_info["aid"]]
        return web.Response(body=data, content_type="application/octet-stream")

    # -- playing users ----------------------------------------------------------

    def _message_payload(
        self, channel_id: str, author_id: str, content: str, **kw: Any
    ) -> dict[str, Any]:
        ch = self.channels[channel_id]
        guild_id = ch.get("guild_id")
        author = self.users[author_id]
        return payloads.message(
            payloads.snowflake(),
            channel_id,
            author,
            content,
            guild_id=guild_id,
            author_member=self.member(author_id) if guild_id else None,
            **kw,
        )

    def _mentions(self, content: str) -> list[dict[str, Any]]:
        return [
            u for uid, u in self.users.items() if f"<@{uid}>" in content or f"<@!{uid}>" in content
        ]

    async def user_message(
        self,
        channel_id: str,
        author_id: str,
        text: str,
        *,
        mention: bool = False,
        reply_to: str | None = None,
        ping: bool = True,
        attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """A person posts; `mention` prefixes the bot's @mention like Discord's client does.

        A reply pings the replied-to author unless `ping` is off (Discord's reply toggle).
        """
        content = f"<@{self.bot_id}> {text}" if mention else text
        files = []
        for name, mime, blob in attachments:
            aid = payloads.snowflake()
            self.files[aid] = (name, blob)
            files.append(
                payloads.attachment(
                    aid, name, mime, len(blob), f"{self.base}/attachments/{aid}/{name}"
                )
            )
        reference = referenced = None
        if reply_to is not None:
            referenced = self.messages[reply_to]
            reference = {
                "message_id": reply_to,
                "channel_id": channel_id,
                "guild_id": self.channels[channel_id].get("guild_id"),
            }
        mentions = self._mentions(content)
        if ping and referenced is not None and referenced["author"] not in mentions:
            # Discord's client pings the replied-to user by default.
            mentions.append(referenced["author"])
        data = self._message_payload(
            channel_id,
            author_id,
            content,
            mentions=mentions,
            attachments=files,
            reference=reference,
            referenced=referenced,
        )
        data["mention_roles"] = re.findall(r"<@&(\d+)>", content)
        self.messages[data["id"]] = data
        await self.gateway.dispatch("MESSAGE_CREATE", data)
        return data

    async def user_voice_message(
        self,
        channel_id: str,
        author_id: str,
        blob: bytes,
        seconds: float,
        *,
        reply_to: str | None = None,
    ) -> dict[str, Any]:
        """A person records a voice message: no text, the IS_VOICE_MESSAGE flag (1 << 13)
        and one audio/ogg attachment with `duration_secs` and a base64 `waveform`."""
        aid = payloads.snowflake()
        self.files[aid] = ("voice-message.ogg", blob)
        url = f"{self.base}/attachments/{aid}/voice-message.ogg"
        file = payloads.attachment(aid, "voice-message.ogg", "audio/ogg", len(blob), url)
        file.update(duration_secs=seconds, waveform="AAAAAAAAAAAA")
        reference = referenced = None
        if reply_to is not None:
            referenced = self.messages[reply_to]
            reference = {
                "message_id": reply_to,
                "channel_id": channel_id,
                "guild_id": self.channels[channel_id].get("guild_id"),
            }
        data = self._message_payload(
            channel_id,
            author_id,
            "",
            mentions=[referenced["author"]] if referenced else [],
            attachments=[file],
            reference=reference,
            referenced=referenced,
        )
        data["flags"] = 1 << 13
        self.messages[data["id"]] = data
        await self.gateway.dispatch("MESSAGE_CREATE", data)
        return data

    async def user_edit(self, message_id: str, text: str) -> None:
        data = self.messages[message_id]
        data.update(
            content=text, edited_timestamp=payloads.iso_now(), mentions=self._mentions(text)
        )
        await self.gateway.dispatch("MESSAGE_UPDATE", dict(data))

    async def user_delete(self, message_id: str) -> None:
        data = self.messages.pop(message_id)
        event = {"id": message_id, "channel_id": data["channel_id"]}
        if "guild_id" in data:
            event["guild_id"] = data["guild_id"]
        await self.gateway.dispatch("MESSAGE_DELETE", event)

    async def user_bulk_delete(self, message_ids: list[str]) -> None:
        """A moderator deletes several messages of one channel at once."""
        gone = [self.messages.pop(message_id) for message_id in message_ids]
        event: dict[str, Any] = {"ids": message_ids, "channel_id": gone[0]["channel_id"]}
        if "guild_id" in gone[0]:
            event["guild_id"] = gone[0]["guild_id"]
        await self.gateway.dispatch("MESSAGE_DELETE_BULK", event)

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: str,
        channel_id: str,
        age: float = 0.0,
    ) -> InteractionRecord:
        """A person runs a slash command. Attachment options are (filename, mime, bytes)."""
        opts, resolved = self.rest.interaction_options(options or {})
        command = {"name": name, "type": 1, "options": opts, "resolved": resolved}
        return await self._interaction(command, user_id, channel_id, age)

    async def message_command(
        self,
        name: str,
        message_id: str,
        *,
        user_id: str,
        channel_id: str,
        age: float = 0.0,
        user_install: bool = False,
        external_apps: bool = False,
    ) -> InteractionRecord:
        """A person picks `name` in a message's Apps menu (a message context-menu command);
        `user_install`: through their own install of the app (see `_interaction`)."""
        target = self.messages[message_id]
        command = {
            "name": name,
            "type": 3,
            "target_id": message_id,
            "resolved": {"messages": {message_id: target}},
        }
        return await self._interaction(
            command,
            user_id,
            channel_id,
            age,
            user_install=user_install,
            external_apps=external_apps,
        )

    async def click(
        self, message_id: str, custom_id: str, *, user_id: str, age: float = 0.0
    ) -> InteractionRecord:
        """A person clicks the button `custom_id` under a message (a component interaction,
        type 3, carrying the whole message)."""
        message = self.messages[message_id]
        posted = self.posted[message_id]
        assert custom_id in posted.buttons, f"no button {custom_id!r} on that message"
        record = await self._interaction(
            {"custom_id": custom_id, "component_type": 2},
            user_id,
            message["channel_id"],
            age,
            kind=3,
            message=message,
            user_install=posted.interaction_token is not None
            and self.interactions[posted.interaction_token].user_install,
        )
        return record

    async def submit_modal(self, shown: InteractionRecord, *answers: str) -> InteractionRecord:
        """The person fills in the modal the app answered `shown` with and submits it (a
        MODAL_SUBMIT interaction, type 5): one answer per text input, in order."""
        modal = shown.modal
        assert modal is not None, "the app did not answer with a modal"
        parts: list[dict[str, Any]] = []
        for part, value in zip(modal["components"], answers, strict=True):
            if part["type"] == 18:  # a label around its input
                inner = part["component"]
                field = {"type": 4, "custom_id": inner["custom_id"], "value": value}
                parts.append({"type": 18, "id": part.get("id", 1), "component": field})
            else:
                inner = part["components"][0]
                field = {"type": 4, "custom_id": inner["custom_id"], "value": value}
                parts.append({"type": 1, "components": [field]})
        return await self._interaction(
            {"custom_id": modal["custom_id"], "components": parts},
            shown.user_id,
            shown.channel_id,
            0.0,
            kind=5,
            user_install=shown.user_install,
        )

    async def _interaction(
        self,
        command: dict[str, Any],
        user_id: str,
        channel_id: str,
        age: float,
        *,
        kind: int = 2,
        message: dict[str, Any] | None = None,
        user_install: bool = False,
        external_apps: bool = False,
    ) -> InteractionRecord:
        """Dispatch an interaction of `kind` (2 application command, 3 component, 5 modal
        submit) with `command` as its data. In a server the bot is not in, only a user
        install reaches the app: `authorizing_integration_owners` then names the user, and
        the member may see public answers only with USE_EXTERNAL_APPS (`external_apps`)."""
        name = str(command.get("name") or command.get("custom_id"))
        iid, token = payloads.snowflake(), f"itoken-{payloads.snowflake()}"
        ch = self.channels[channel_id]
        data: dict[str, Any] = {
            "id": iid,
            "application_id": self.app_id,
            "type": kind,
            "token": token,
            "version": 1,
            "data": {**command},
            "channel_id": channel_id,
            "channel": ch,
            "app_permissions": payloads.ALL_PERMISSIONS,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": ch.get("guild_id", self.guild_id)},
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if kind == 2:
            data["data"]["id"] = next(
                (
                    c["id"]
                    for cs in self.commands.values()
                    for c in cs
                    if c["name"] == name and c.get("type", 1) == command["type"]
                ),
                payloads.snowflake(),
            )
        if message is not None:
            data["message"] = message
        foreign = "guild_id" in ch and ch["guild_id"] not in self.guilds
        if user_install or foreign:
            data["authorizing_integration_owners"] = {"1": user_id}
            # What Discord grants an app where it is not installed in the server.
            data["app_permissions"] = str((1 << 15) | (1 << 14) | (1 << 17))
        if "guild_id" in ch:
            data["guild_id"] = ch["guild_id"]
            data["guild_locale"] = "en-US"
            data["context"] = 0
            bits = int(self.permissions_of(user_id)) | (1 << 50 if external_apps else 0)
            data["member"] = {**self.member(user_id), "permissions": str(bits)}
            if foreign:
                data["guild"] = {"id": ch["guild_id"], "locale": "en-US", "features": []}
        else:
            data["user"] = self.users[user_id]
            data["context"] = 1
        record = InteractionRecord(iid, token, name, channel_id, user_id, kind=kind)
        record.message_id = message["id"] if message is not None else None
        record.guild_id = ch.get("guild_id")
        record.user_install = user_install or foreign
        record.created -= age  # as if Discord had sent it `age` seconds ago
        self.interactions[token] = record
        await self.gateway.dispatch("INTERACTION_CREATE", data)
        return record

    # -- fault injection ----------------------------------------------------------

    def inject_429(self, kind: str, count: int = 1, retry_after: float = 0.3) -> None:
        """Refuse the next `count` requests of `kind`: create/edit/typing/followup/followup_edit."""
        self.pending_429s.setdefault(kind, []).extend([retry_after] * count)

    # -- reading what users see ----------------------------------------------------

    def bot_messages(self, channel_id: str | None = None) -> list[Posted]:
        return [
            p
            for p in self.posted.values()
            if p.author_id == self.bot_id
            and not p.deleted
            and (channel_id is None or p.channel_id == channel_id)
        ]

    def replies_to(self, message_id: str) -> list[Posted]:
        """The bot's answer to a message: the reply and the parts that chain from it."""
        out: list[Posted] = []
        wanted = message_id
        for p in sorted(self.bot_messages(), key=lambda p: int(p.id)):
            if p.reference_id == wanted:
                out.append(p)
                wanted = p.id
        return out

    def requests_to(self, method: str, fragment: str) -> list[RequestLog]:
        return [r for r in self.requests if r.method == method and fragment in r.path]

    def log_request(self, method: str, path: str, status: int, *, port: int = 0) -> None:
        self.requests.append(RequestLog(time.monotonic(), method, path, status, port))

    @staticmethod
    async def wait_until(cond: Callable[[], Any], limit: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + limit
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or cond}")
            await asyncio.sleep(0.01)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """discord.py parses a body as JSON only when Content-Type is exactly application/json."""
    merged = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(data).encode(), headers=merged)
