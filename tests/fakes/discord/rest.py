"""REST routes of the fake, with Discord's per-channel, per-webhook and global rate limits."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from tests.fakes.discord import payloads
from tests.fakes.discord.ratelimit import too_many
from tests.fakes.discord.records import Posted, pings

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

API = "/api/v10"
# Which fake bucket each kind of request spends (send and edit share a channel's bucket).
BUCKET_OF = {
    "create": "messages",
    "edit": "messages",
    "delete": "delete",
    "typing": "typing",
    "followup": "webhook",
    "followup_edit": "webhook",
}
EPHEMERAL = 64
SUPPRESS_EMBEDS = 4
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)  # minutes a thread may stay idle
# Interaction callback types each interaction type may answer with (type 1 PONG aside):
# 4 message, 5 deferred message, 6 deferred update, 7 update message, 9 modal.
CALLBACKS_FOR = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 5: {4, 5, 6, 7}}
INTEGRATION_TYPES = {0, 1}  # guild install, user install
CONTEXTS = {0, 1, 2}  # guild, bot DM, private channel


def invalid_form(field: str, message: str) -> web.Response:
    """Discord's 400 Invalid Form Body naming the offending field."""
    errors = {field: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": message}]}}
    return _json({"code": 50035, "message": "Invalid Form Body", "errors": errors}, 400)


def check_components(rows: Any) -> str | None:
    """What is wrong with a message's `components` (action rows of buttons), or None."""
    if not isinstance(rows, list) or len(rows) > 5:
        return "at most 5 action rows"
    seen: set[str] = set()
    for row in rows:
        buttons = row.get("components") if isinstance(row, dict) else None
        if row.get("type") != 1 or not isinstance(buttons, list) or not 1 <= len(buttons) <= 5:
            return "an action row (type 1) holds 1 to 5 components"
        for button in buttons:
            if button.get("type") != 2 or button.get("style") not in (1, 2, 3, 4, 5, 6):
                return "only buttons (type 2, style 1-6) are supported here"
            label = button.get("label") or ""
            if len(label) > 80 or not (label or button.get("emoji")):
                return "a button needs a label of at most 80 characters or an emoji"
            custom = button.get("custom_id")
            if button["style"] != 5 and not (isinstance(custom, str) and 1 <= len(custom) <= 100):
                return "custom_id must be 1 to 100 characters"
            if custom in seen:
                return "custom_id must be unique in a message"
            seen.add(custom)
    return None


def check_modal(data: dict[str, Any]) -> str | None:
    """What is wrong with a modal (callback type 9), or None."""
    custom, title = data.get("custom_id"), data.get("title")
    if not (isinstance(custom, str) and 1 <= len(custom) <= 100):
        return "custom_id must be 1 to 100 characters"
    if not (isinstance(title, str) and 1 <= len(title) <= 45):
        return "title must be 1 to 45 characters"
    parts = data.get("components") or []
    if not 1 <= len(parts) <= 5:
        return "a modal holds 1 to 5 components"
    for part in parts:
        inner = part.get("component") if part.get("type") == 18 else None
        if part.get("type") == 1 and len(part.get("components") or []) == 1:
            inner = part["components"][0]
        if inner is None or inner.get("type") != 4 or not inner.get("custom_id"):
            return "each component is a text input (type 4) in an action row or a label"
        if part.get("type") == 1 and not (1 <= len(inner.get("label") or "") <= 45):
            return "a text input's label must be 1 to 45 characters"
    return None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    from tests.fakes.discord.server import json_response

    return json_response(data, status, headers)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status)


def local_port(request: web.Request) -> int:
    """The fake's port a request came in on, which tells apart clients given different ports."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if sockname else 0


# Discord's answers when it refuses a message in a channel: code -> (status, message).
REFUSALS = {
    50013: (403, "Missing Permissions"),
    50001: (403, "Missing Access"),
    10003: (404, "Unknown Channel"),
}


class Rest:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.refusing: dict[str, int] = {}  # channel id -> the code its sends and edits get
        self.no_threads: set[str] = set()  # channels where the bot lacks Create Public Threads

    def refuse(self, cid: str, code: int | None) -> None:
        """Sends and edits in channel `cid` fail from now on with Discord's `code` (50013
        Missing Permissions, 50001 Missing Access: 403; 10003 Unknown Channel: 404);
        None lifts it."""
        if code is None:
            self.refusing.pop(cid, None)
        else:
            self.refusing[cid] = code

    def _refusal(self, request: web.Request, cid: str) -> web.Response | None:
        code = self.refusing.get(cid)
        if code is None:
            return None
        status, message = REFUSALS[code]
        self._log(request, status)
        return _error(status, code, message)

    def install(self, app: web.Application) -> None:
        r = app.router
        r.add_get(API + "/gateway", self.get_gateway)
        r.add_get(API + "/gateway/bot", self.get_bot_gateway)
        r.add_get(API + "/users/@me", self.get_me)
        r.add_get(API + "/oauth2/applications/@me", self.get_app)
        r.add_get(API + "/applications/@me", self.get_app)
        r.add_put(API + "/applications/{app}/commands", self.put_commands)
        r.add_put(API + "/applications/{app}/guilds/{guild}/commands", self.put_commands)
        r.add_get(API + "/applications/{app}/commands", self.get_commands)
        r.add_get(API + "/applications/{app}/guilds/{guild}/commands", self.get_commands)
        r.add_post(API + "/users/@me/channels", self.create_dm)
        r.add_get(API + "/channels/{cid}", self.get_channel)
        r.add_get(API + "/guilds/{guild}/members/{uid}", self.get_member)
        r.add_post(API + "/channels/{cid}/typing", self.typing)
        r.add_post(API + "/channels/{cid}/messages", self.create_message)
        r.add_post(API + "/channels/{cid}/messages/{mid}/threads", self.start_thread)
        r.add_get(API + "/channels/{cid}/messages", self.history)
        r.add_get(API + "/channels/{cid}/messages/{mid}", self.get_message)
        r.add_patch(API + "/channels/{cid}/messages/{mid}", self.edit_message)
        r.add_delete(API + "/channels/{cid}/messages/{mid}", self.delete_message)
        r.add_post(API + "/interactions/{iid}/{token}/callback", self.callback)
        r.add_post(API + "/webhooks/{app}/{token}", self.followup)
        r.add_get(API + "/webhooks/{app}/{token}/messages/{mid}", self.get_followup)
        r.add_patch(API + "/webhooks/{app}/{token}/messages/{mid}", self.edit_followup)
        r.add_delete(API + "/webhooks/{app}/{token}/messages/{mid}", self.delete_followup)

    # -- plumbing ---------------------------------------------------------------------

    async def _gate(
        self, request: web.Request, kind: str, major: str, counts_global: bool = True
    ) -> tuple[web.Response | None, dict[str, str]]:
        """Apply injected faults and rate limits; returns (429 response or None, headers)."""
        fake, now = self.fake, time.monotonic()
        if fake.pending_429s.get(kind):
            fake.injected_429s += 1
            retry = fake.pending_429s[kind].pop(0)
            return too_many(retry, scope="user", bucket=None, now=now), {}
        if not fake.limits.enabled:
            return None, {}
        if counts_global and not fake.limits.global_take(now):
            fake.rate_limited += 1
            return too_many(
                fake.limits.global_retry_after(now), scope="global", bucket=None, now=now
            ), {}
        bucket_kind = BUCKET_OF.get(kind)
        if bucket_kind is None:
            return None, {}
        bucket = fake.limits.bucket(bucket_kind, major)
        if not bucket.take(now):
            fake.rate_limited += 1
            return too_many(bucket.reset_after(now), scope="user", bucket=bucket, now=now), {}
        return None, bucket.headers(now)

    async def _global_only(self, request: web.Request) -> web.Response | None:
        refused, _ = await self._gate(request, "other", "")
        return refused

    def _log(self, request: web.Request, status: int) -> None:
        self.fake.log_request(request.method, request.path, status, port=local_port(request))

    @staticmethod
    async def _body(request: web.Request) -> tuple[Any, dict[str, bytes]]:
        """The JSON payload (dict, or list for command sync) and any uploaded files."""
        files: dict[str, bytes] = {}
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files[part.filename or part.name or "file"] = bytes(await part.read())
            return payload, files
        raw = await request.read()
        return (json.loads(raw) if raw else {}), files

    def _check_auth(self, request: web.Request) -> web.Response | None:
        from tests.fakes.discord.server import BOT_TOKEN

        if request.headers.get("Authorization") != f"Bot {BOT_TOKEN}":
            return _error(401, 0, "401: Unauthorized")
        return None

    # -- login ------------------------------------------------------------------------

    async def get_gateway(self, request: web.Request) -> web.Response:
        self._log(request, 200)
        return _json({"url": self.fake.gateway_url})

    async def get_bot_gateway(self, request: web.Request) -> web.Response:
        """The gateway URL, the recommended shard count and the session start limits."""
        denied = self._check_auth(request)
        self._log(request, 401 if denied else 200)
        if denied:
            return denied
        return _json(
            {
                "url": self.fake.bot_gateway_url or self.fake.gateway_url,
                "shards": self.fake.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": self.fake.max_concurrency,
                },
            }
        )

    async def get_me(self, request: web.Request) -> web.Response:
        if self.fake.outage_logins > 0:
            self.fake.outage_logins -= 1
            self._log(request, 503)
            return _error(503, 0, "upstream connect error")
        denied = self._check_auth(request)
        self._log(request, 401 if denied else 200)
        return denied or _json(self.fake.bot_user)

    async def get_app(self, request: web.Request) -> web.Response:
        self._log(request, 200)
        fake = self.fake
        return _json(
            {
                "id": fake.app_id,
                "name": "teambot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": fake.users[fake.owner_id],
                "team": None,
                "summary": "",
                "rpc_origins": [],
                "bot": fake.bot_user,
            }
        )

    async def put_commands(self, request: web.Request) -> web.Response:
        refused = await self._global_only(request)
        if refused:
            self._log(request, 429)
            return refused
        body, _ = await self._body(request)
        scope = request.match_info.get("guild", "global")
        for cmd in body:
            types, contexts = cmd.get("integration_types"), cmd.get("contexts")
            if types is not None and not (types and set(types) <= INTEGRATION_TYPES):
                self._log(request, 400)
                return invalid_form("integration_types", "must be 0 (guild) and/or 1 (user)")
            if contexts is not None and not (contexts and set(contexts) <= CONTEXTS):
                self._log(request, 400)
                return invalid_form("contexts", "must be among 0, 1 and 2")
        out = []
        for cmd in body:
            out.append(
                {
                    "type": 1,
                    "description": "",  # what Discord answers for context menu commands
                    **cmd,
                    "id": payloads.snowflake(),
                    "application_id": self.fake.app_id,
                    "version": payloads.snowflake(),
                    "guild_id": None if scope == "global" else scope,
                }
            )
        self.fake.commands[scope] = out
        self.fake.command_syncs.append((scope, body))
        self._log(request, 200)
        return _json(out)

    async def get_commands(self, request: web.Request) -> web.Response:
        self._log(request, 200)
        return _json(self.fake.commands.get(request.match_info.get("guild", "global"), []))

    # -- channels -----------------------------------------------------------------------

    async def create_dm(self, request: web.Request) -> web.Response:
        body, _ = await self._body(request)
        self._log(request, 200)
        return _json(self.fake.channels[self.fake.dm(str(body["recipient_id"]))])

    async def get_channel(self, request: web.Request) -> web.Response:
        ch = self.fake.channels.get(request.match_info["cid"])
        self._log(request, 200 if ch else 404)
        return _json(ch) if ch else _error(404, 10003, "Unknown Channel")

    async def get_member(self, request: web.Request) -> web.Response:
        fake = self.fake
        uid = request.match_info["uid"]
        known = request.match_info["guild"] in fake.guilds and uid in fake.users
        found = known and uid not in fake.outsiders
        self._log(request, 200 if found else 404)
        if not found:
            return _error(404, 10007, "Unknown Member")
        return _json(fake.member(uid))

    async def typing(self, request: web.Request) -> web.Response:
        refused, headers = await self._gate(request, "typing", request.match_info["cid"])
        if refused:
            self._log(request, 429)
            return refused
        self._log(request, 204)
        return web.Response(status=204, headers=headers)

    async def history(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        msgs = [m for m in self.fake.messages.values() if m["channel_id"] == cid]
        msgs.sort(key=lambda m: int(m["id"]), reverse=True)
        self._log(request, 200)
        return _json(msgs[: int(request.query.get("limit", "50"))])

    async def get_message(self, request: web.Request) -> web.Response:
        data = self.fake.messages.get(request.match_info["mid"])
        self._log(request, 200 if data else 404)
        return _json(data) if data else _error(404, 10008, "Unknown Message")

    async def create_message(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self.fake.channels:
            self._log(request, 404)
            return _error(404, 10003, "Unknown Channel")
        if (refusal := self._refusal(request, cid)) is not None:
            return refusal
        refused, headers = await self._gate(request, "create", cid)
        if refused:
            self._log(request, 429)
            return refused
        body, files = await self._body(request)
        result = await self.make_message(cid, body, files)
        status = result.status if isinstance(result, web.Response) else 200
        self._log(request, status)
        if isinstance(result, web.Response):
            return result
        return _json(self.fake.messages[result.id], headers=headers)

    async def edit_message(self, request: web.Request) -> web.Response:
        cid, mid = request.match_info["cid"], request.match_info["mid"]
        if (refusal := self._refusal(request, cid)) is not None:
            return refusal
        refused, headers = await self._gate(request, "edit", cid)
        if refused:
            self._log(request, 429)
            return refused
        body, files = await self._body(request)
        result = await self.change_message(mid, body, files)
        self._log(request, result.status if isinstance(result, web.Response) else 200)
        if isinstance(result, web.Response):
            return result
        return _json(self.fake.messages[mid], headers=headers)

    async def delete_message(self, request: web.Request) -> web.Response:
        cid, mid = request.match_info["cid"], request.match_info["mid"]
        refused, headers = await self._gate(request, "delete", cid)
        if refused:
            self._log(request, 429)
            return refused
        posted = self.fake.posted.get(mid)
        if mid not in self.fake.messages:
            self._log(request, 404)
            return _error(404, 10008, "Unknown Message")
        if posted is not None:
            posted.deleted = True
        await self.fake.user_delete(mid)
        self._log(request, 204)
        return web.Response(status=204, headers=headers)

    async def start_thread(self, request: web.Request) -> web.Response:
        """POST /channels/{id}/messages/{mid}/threads: a public thread on a message, whose id
        is the message's; THREAD_CREATE and MESSAGE_UPDATE (the message's `thread`) follow."""
        fake, cid, mid = self.fake, request.match_info["cid"], request.match_info["mid"]
        channel = fake.channels.get(cid)
        if channel is None:
            self._log(request, 404)
            return _error(404, 10003, "Unknown Channel")
        if (refusal := self._refusal(request, cid)) is not None:
            return refusal
        if cid in self.no_threads:
            self._log(request, 403)
            return _error(403, 50013, "Missing Permissions")
        refused, _ = await self._gate(request, "thread", cid)
        if refused:
            self._log(request, 429)
            return refused
        body, _ = await self._body(request)
        name = body.get("name")
        duration = body.get("auto_archive_duration", 1440)
        starter = fake.messages.get(mid)
        problem = None
        if not (isinstance(name, str) and 1 <= len(name) <= 100):
            problem = invalid_form("name", "must be 1 to 100 characters")
        elif duration not in ARCHIVE_DURATIONS:
            problem = invalid_form("auto_archive_duration", "must be 60, 1440, 4320 or 10080")
        elif channel["type"] not in (0, 5):
            problem = _error(400, 50024, "Cannot execute action on this channel type")
        elif starter is None or starter["channel_id"] != cid:
            problem = _error(404, 10008, "Unknown Message")
        elif mid in fake.channels:
            problem = _error(400, 160004, "A thread has already been created for this message")
        if problem is not None:
            self._log(request, problem.status)
            return problem
        gid = channel["guild_id"]
        thread = payloads.thread_channel(mid, gid, cid, name, fake.bot_id)
        thread["thread_metadata"]["auto_archive_duration"] = duration
        fake.channels[mid] = thread
        fake.guilds[gid]["threads"][mid] = thread
        fake.threads_started.append(mid)
        self._log(request, 201)
        await fake.gateway.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        starter["thread"] = thread
        await fake.gateway.dispatch("MESSAGE_UPDATE", dict(starter))
        return _json(thread, 201)

    # -- messages the bot writes ---------------------------------------------------------

    async def make_message(
        self,
        cid: str,
        body: dict[str, Any],
        files: dict[str, bytes],
        *,
        token: str | None = None,
        ephemeral: bool = False,
        reuse: Posted | None = None,
    ) -> Posted | web.Response:
        fake = self.fake
        content = str(body.get("content") or "")
        if len(content) > 2000:
            return _json(
                {
                    "code": 50035,
                    "message": "Invalid Form Body",
                    "errors": {
                        "content": {
                            "_errors": [
                                {
                                    "code": "BASE_TYPE_MAX_LENGTH",
                                    "message": "Must be 2000 or fewer in length.",
                                }
                            ]
                        }
                    },
                },
                400,
            )
        if not content and not files and not body.get("embeds") and not body.get("components"):
            return _error(400, 50006, "Cannot send an empty message")
        if (wrong := check_components(body.get("components") or [])) is not None:
            return invalid_form("components", wrong)
        ref = body.get("message_reference")
        referenced = None
        if ref:
            referenced = fake.messages.get(str(ref.get("message_id")))
            if referenced is None and ref.get("fail_if_not_exists", True):
                return _json(
                    {
                        "code": 50035,
                        "message": "Invalid Form Body",
                        "errors": {
                            "message_reference": {
                                "_errors": [
                                    {
                                        "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                        "message": "Unknown message",
                                    }
                                ]
                            }
                        },
                    },
                    400,
                )
        ch = fake.channels[cid]
        attachments = self._store_files(files)
        data = payloads.message(
            reuse.id if reuse else payloads.snowflake(),
            cid,
            fake.bot_user,
            content,
            guild_id=ch.get("guild_id"),
            attachments=attachments,
            reference={"message_id": referenced["id"], "channel_id": cid} if referenced else None,
            referenced=referenced,
            webhook_id=fake.app_id if token else None,
        )
        flags = int(body.get("flags") or 0)
        data["flags"] = flags | (EPHEMERAL if ephemeral else 0)
        data["components"] = body.get("components") or []
        allowed = body.get("allowed_mentions")
        posted = reuse or Posted(data["id"], cid, fake.bot_id, content, data)
        posted.content, posted.payload = content, data
        posted.history.append((time.monotonic(), content))
        posted.allowed_mentions.append(allowed)
        posted.pings |= pings(content, allowed, referenced["author"]["id"] if referenced else None)
        posted.reference_id = posted.reference_id or (referenced["id"] if referenced else None)
        posted.files.update(files)
        posted.interaction_token, posted.ephemeral = token, ephemeral or posted.ephemeral
        posted.suppress_embeds = posted.suppress_embeds or bool(flags & SUPPRESS_EMBEDS)
        fake.posted[posted.id] = posted
        fake.messages[posted.id] = data
        if not posted.ephemeral:
            await fake.gateway.dispatch("MESSAGE_UPDATE" if reuse else "MESSAGE_CREATE", data)
        return posted

    async def change_message(
        self, mid: str, body: dict[str, Any], files: dict[str, bytes]
    ) -> Posted | web.Response:
        fake = self.fake
        posted, data = fake.posted.get(mid), fake.messages.get(mid)
        if data is None or posted is None or posted.deleted:
            return _error(404, 10008, "Unknown Message")
        if posted.author_id != fake.bot_id:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        if "content" in body:
            content = str(body["content"] or "")
            if len(content) > 2000:
                return _json({"code": 50035, "message": "Invalid Form Body"}, 400)
            posted.content = data["content"] = content
        if "components" in body:
            if (wrong := check_components(body["components"] or [])) is not None:
                return invalid_form("components", wrong)
            data["components"] = body["components"] or []
        if files or "attachments" in body:
            keep = {str(a.get("id")) for a in body.get("attachments") or []}
            data["attachments"] = [a for a in data["attachments"] if a["id"] in keep]
            data["attachments"] += self._store_files(files)
            posted.files.update(files)
        data["edited_timestamp"] = payloads.iso_now()
        allowed = body.get("allowed_mentions")
        posted.allowed_mentions.append(allowed)
        posted.pings |= pings(posted.content, allowed, None)
        posted.history.append((time.monotonic(), posted.content))
        if not posted.ephemeral:
            await fake.gateway.dispatch("MESSAGE_UPDATE", dict(data))
        return posted

    def _store_files(self, files: dict[str, bytes]) -> list[dict[str, Any]]:
        out = []
        for name, blob in files.items():
            aid = payloads.snowflake()
            self.fake.files[aid] = (name, blob)
            out.append(
                payloads.attachment(
                    aid, name, "text/plain", len(blob), f"{self.fake.base}/attachments/{aid}/{name}"
                )
            )
        return out

    # -- interactions ------------------------------------------------------------------------

    def interaction_options(
        self, options: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        opts: list[dict[str, Any]] = []
        resolved: dict[str, Any] = {}
        for name, value in options.items():
            if isinstance(value, tuple):
                filename, mime, blob = value
                aid = payloads.snowflake()
                self.fake.files[aid] = (filename, blob)
                resolved.setdefault("attachments", {})[aid] = payloads.attachment(
                    aid, filename, mime, len(blob), f"{self.fake.base}/attachments/{aid}/{filename}"
                )
                opts.append({"name": name, "type": 11, "value": aid})
            elif isinstance(value, bool):
                opts.append({"name": name, "type": 5, "value": value})
            elif isinstance(value, int):
                opts.append({"name": name, "type": 4, "value": value})
            else:
                opts.append({"name": name, "type": 3, "value": str(value)})
        return opts, resolved

    async def callback(self, request: web.Request) -> web.Response:
        fake = self.fake
        record = fake.interactions.get(request.match_info["token"])
        body, files = await self._body(request)
        if record is None or record.id != request.match_info["iid"]:
            self._log(request, 404)
            return _error(404, 10062, "Unknown interaction")
        now = time.monotonic()
        if now - record.created > 3.0:
            self._log(request, 404)
            return _error(404, 10062, "Unknown interaction")
        if record.callbacks:
            self._log(request, 400)
            return _error(400, 40060, "Interaction has already been acknowledged.")
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        if kind not in CALLBACKS_FOR.get(record.kind, set()):
            self._log(request, 400)
            return invalid_form("type", f"callback type {kind} is not valid for this interaction")
        if kind == 9 and (wrong := check_modal(data)) is not None:
            self._log(request, 400)
            return invalid_form("data", wrong)
        record.callbacks.append((now, body))
        ephemeral = bool(int(data.get("flags", 0)) & EPHEMERAL)
        original = None
        if kind == 9:
            record.modal = data
        if kind in (6, 7) and record.message_id is not None:
            # A component's "original response" is the message it is on.
            record.followups[:0] = [record.message_id]
            if kind == 7:
                result = await self.change_message(record.message_id, data, files)
                if isinstance(result, web.Response):
                    self._log(request, result.status)
                    return result
        if kind in (4, 5):
            placeholder = {"content": data.get("content") or ""} if kind == 4 else {"content": ""}
            original = Posted(payloads.snowflake(), record.channel_id, fake.bot_id, "", {})
            original.interaction_token = record.token
            record.followups.append(original.id)
            if kind == 4:
                result = await self.make_message(
                    record.channel_id,
                    {**data, **placeholder},
                    files,
                    token=record.token,
                    ephemeral=ephemeral,
                    reuse=original,
                )
                if isinstance(result, web.Response):
                    self._log(request, result.status)
                    return result
            else:
                original.ephemeral = ephemeral
                original.history.append((now, ""))
                fake.posted[original.id] = original
        self._log(request, 200)
        resp: dict[str, Any] = {
            "interaction": {
                "id": record.id,
                "type": record.kind,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
            }
        }
        if original is not None:
            resp["interaction"]["response_message_id"] = original.id
        if kind == 4 and original is not None:
            resp["resource"] = {"type": 4, "message": fake.messages[original.id]}
        elif kind:
            resp["resource"] = {"type": kind}
        return _json(resp)

    def _original(self, token: str) -> Posted | None:
        record = self.fake.interactions.get(token)
        if record is None or not record.followups:
            return None
        return self.fake.posted.get(record.followups[0])

    async def followup(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        record = self.fake.interactions.get(token)
        if record is None:
            self._log(request, 404)
            return _error(404, 10015, "Unknown Webhook")
        refused, headers = await self._gate(request, "followup", token, counts_global=False)
        if refused:
            self._log(request, 429)
            return refused
        body, files = await self._body(request)
        original = self._original(token)
        # The first follow-up after a defer fills the "is thinking…" message, keeping its privacy.
        first = original is not None and original.id not in self.fake.messages
        ephemeral = (
            original.ephemeral
            if first and original
            else bool(int(body.get("flags", 0)) & EPHEMERAL)
        )
        result = await self.make_message(
            record.channel_id,
            body,
            files,
            token=token,
            ephemeral=ephemeral,
            reuse=original if first else None,
        )
        self._log(request, result.status if isinstance(result, web.Response) else 200)
        if isinstance(result, web.Response):
            return result
        if not first:
            record.followups.append(result.id)
        return _json(self.fake.messages[result.id], headers=headers)

    def _resolve(self, token: str, mid: str) -> str | None:
        if mid == "@original":
            original = self._original(token)
            return original.id if original else None
        return mid

    async def get_followup(self, request: web.Request) -> web.Response:
        mid = self._resolve(request.match_info["token"], request.match_info["mid"])
        data = self.fake.messages.get(mid or "")
        self._log(request, 200 if data else 404)
        return _json(data) if data else _error(404, 10008, "Unknown Message")

    async def edit_followup(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        refused, headers = await self._gate(request, "followup_edit", token, counts_global=False)
        if refused:
            self._log(request, 429)
            return refused
        mid = self._resolve(token, request.match_info["mid"])
        body, files = await self._body(request)
        if mid is not None and mid not in self.fake.messages and mid in self.fake.posted:
            # Editing the deferred "thinking" message gives it its first content.
            result = await self.make_message(
                self.fake.interactions[token].channel_id,
                body,
                files,
                token=token,
                ephemeral=self.fake.posted[mid].ephemeral,
                reuse=self.fake.posted[mid],
            )
        else:
            result = await self.change_message(mid or "", body, files)
        self._log(request, result.status if isinstance(result, web.Response) else 200)
        if isinstance(result, web.Response):
            return result
        return _json(self.fake.messages[result.id], headers=headers)

    async def delete_followup(self, request: web.Request) -> web.Response:
        mid = self._resolve(request.match_info["token"], request.match_info["mid"])
        posted = self.fake.posted.get(mid or "")
        if posted is not None:
            posted.deleted = True
        self._log(request, 204)
        return web.Response(status=204)
