"""FakeSlack: a loopback Slack for the real slack-bolt / slack-sdk clients.

Serves the Web API under `/api/<method>` (Bearer tokens checked, Slack's rate limits
and length errors enforced), private file downloads (an HTML login page without the
bot token, as Slack does), `response_url`s, a Socket Mode websocket, and delivers
events either over that socket or as signed HTTP requests. Everything is recorded
so tests can assert what a person in Slack would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from tests.fakes.slack import surfaces, webapi
from tests.fakes.slack.delivery import as_json, event_callback, form_body, post_signed
from tests.fakes.slack.limits import SLACK_RULES, Limiter
from tests.fakes.slack.records import PING, Call, Delivery, Posted
from tests.fakes.slack.socket import SocketHub
from tests.fakes.slack.surfaces import AgentState, Surfaces, View

# Methods that write into a channel, which a refusing channel refuses.
REFUSABLE = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        "chat.postEphemeral",
    }
)
# Codes under which even an ephemeral message there is refused.
EPHEMERAL_REFUSED = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


class FakeSlack(Surfaces):
    team_id = "T0FAKE"
    bot_user_id = "UBOT"
    bot_id = "BBOT"
    bot_token = "xoxb-fake-bot-token"
    app_token = "xapp-fake-app-token"
    signing_secret = "fake-signing-secret"

    def __init__(
        self,
        *,
        limits: bool = True,
        ack_timeout: float = 3.0,
        echo_bot_events: bool = True,
        users: dict[str, str] | None = None,
    ) -> None:
        self.limiter = Limiter(SLACK_RULES if limits else {})
        self.hub = SocketHub(ack_timeout=ack_timeout)
        self.echo_bot_events = echo_bot_events
        self.users: dict[str, str] = dict(users or {"U1": "Alice", "U2": "Bob", "U3": "Carol"})
        self.admins: set[str] = set()  # workspace admins (users.info is_admin)
        self.owners: set[str] = set()  # workspace owners (is_owner, and is_admin too)
        self.usergroups: dict[str, dict[str, Any]] = {}  # id -> usergroups.list entry
        self.channels: dict[str, str] = {}
        self.messages: dict[tuple[str, str], Posted] = {}
        self.calls: list[Call] = []
        self.ratelimited: Counter[str] = Counter()
        self.statuses: list[tuple[float, tuple[str, str], str]] = []
        self.status: dict[tuple[str, str], str] = {}
        self.reactions: dict[tuple[str, str], set[str]] = {}
        self.reaction_log: list[tuple[float, tuple[str, str], str, bool]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.http_deliveries: list[Delivery] = []
        self.pings: list[str] = []
        self.files: dict[str, tuple[str, bytes, bool]] = {}
        self.file_objects: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, list[tuple[int, str, int]]] = {}
        self.max_post_chars = 4000
        self.max_update_chars = 4000
        self.streaming_enabled = True
        self.status_enabled = True
        self.expire_streams = False
        # channel -> the error code every post there gets (see `refuse`)
        self.refusing: dict[str, str] = {}
        # token -> the error code Slack answers for it (see `refuse_token`)
        self.refused_tokens: dict[str, str] = {}
        self.views: list[View] = []  # modals opened and Home views published
        self.triggers: dict[str, str] = {}  # live trigger_ids -> the user who clicked
        self.agent = AgentState()
        self.home_enabled = True
        self.mode = "socket"
        self.http_url = ""
        self.ticket = 0
        self.port = 0
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # Lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/link/", self.hub.handle)
        app.router.add_get("/files/{file_id}/{name}", self._file)
        app.router.add_post("/respond/{id}", self._respond)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close()
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/"

    # Web API

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        body = await request.read()
        if body:
            if request.content_type == "application/json":
                args.update(json.loads(body))
            else:
                args.update(parse_qsl(body.decode()))
        return args

    def _token_ok(self, method: str, token: str) -> bool:
        if method == "apps.connections.open":
            return token == self.app_token
        return token == self.bot_token

    def refuse_token(self, token: str, code: str | None = "invalid_auth") -> None:
        """Slack refuses `token` from now on with `code` (invalid_auth, not_authed,
        account_inactive, token_revoked); None accepts it again."""
        if code is None:
            self.refused_tokens.pop(token, None)
        else:
            self.refused_tokens[token] = code

    def refuse(self, channel: str, code: str | None) -> None:
        """Posts in `channel` are refused with `code` from now on, as Slack refuses them:
        restricted_action (posting not allowed), not_in_channel, channel_not_found,
        is_archived, msg_too_long; None lifts it. Ephemeral messages there are refused
        too where Slack would (not a member, no channel, archived)."""
        if code is None:
            self.refusing.pop(channel, None)
        else:
            self.refusing[channel] = code

    def _refusal(self, method: str, args: dict[str, Any]) -> str | None:
        code = self.refusing.get(str(args.get("channel") or args.get("channel_id") or ""))
        if code is None or method not in REFUSABLE:
            return None
        if method == "chat.postEphemeral" and code not in EPHEMERAL_REFUSED:
            return None
        return code

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or str(args.pop("token", ""))
        now = time.monotonic()
        if not self._token_ok(method, token):
            return self._reply(method, args, now, {"ok": False, "error": "invalid_auth"})
        if token in self.refused_tokens:
            error = self.refused_tokens[token]
            return self._reply(method, args, now, {"ok": False, "error": error})
        refused = self._refusal(method, args)
        if refused is not None:
            return self._reply(method, args, now, {"ok": False, "error": refused})
        injected = self._injected(method)
        retry_after = None
        if injected and injected[0] == 429:
            retry_after = injected[2]
        elif not injected:
            retry_after = self.limiter.check(method, str(args.get("channel", "")), now)
        if retry_after is not None:
            self.ratelimited[method] += 1
            body = {"ok": False, "error": "ratelimited"}
            self.calls.append(Call(method, args, now, False, "ratelimited", 429))
            return web.json_response(body, status=429, headers={"Retry-After": str(retry_after)})
        if injected:
            return self._reply(method, args, now, {"ok": False, "error": injected[1]})
        handler = webapi.METHODS.get(method) or surfaces.METHODS.get(method)
        if handler is None:
            return self._reply(method, args, now, {"ok": False, "error": "unknown_method"})
        try:
            result = await handler(self, args)
        except webapi.ApiError as exc:
            result = {"ok": False, "error": exc.code}
        return self._reply(method, args, now, result)

    def _reply(
        self, method: str, args: dict[str, Any], now: float, body: dict[str, Any]
    ) -> web.Response:
        self.calls.append(Call(method, args, now, bool(body.get("ok")), str(body.get("error", ""))))
        return web.json_response(body)

    def _injected(self, method: str) -> tuple[int, str, int] | None:
        queue = self.failures.get(method)
        return queue.pop(0) if queue else None

    def fail_next(
        self, method: str, *, error: str = "ratelimited", retry_after: int = 1, times: int = 1
    ) -> None:
        """Make the next `times` calls of `method` fail (429 + Retry-After for ratelimited)."""
        status = 429 if error == "ratelimited" else 200
        self.failures.setdefault(method, []).extend([(status, error, retry_after)] * times)

    # Workspace state

    def next_id(self) -> int:
        return next(self._ids)

    def new_ts(self) -> str:
        return f"{1_800_000_000 + next(self._ts)}.000100"

    def channel(self, channel: str) -> str:
        if channel not in self.channels:
            raise webapi.ApiError("channel_not_found")
        return channel

    def add_channel(self, channel: str, kind: str = "channel") -> None:
        self.channels[channel] = kind

    def add_usergroup(self, handle: str, users: list[str], *, disabled: bool = False) -> str:
        """A user group (an @handle people can mention) with these members; returns its id."""
        group_id = f"S{next(self._ids):08d}"
        self.usergroups[group_id] = {
            "id": group_id,
            "team_id": self.team_id,
            "is_usergroup": True,
            "name": handle.title(),
            "description": "",
            "handle": handle,
            "is_external": False,
            "date_create": 1_700_000_000,
            "date_update": 1_700_000_000,
            "date_delete": 1_700_000_100 if disabled else 0,
            "auto_type": None,
            "created_by": "U1",
            "updated_by": "U1",
            "deleted_by": None,
            "prefs": {"channels": [], "groups": []},
            "users": list(users),
        }
        return group_id

    def add_bot_message(
        self, channel: str, text: str, blocks: list[dict[str, Any]], thread_ts: str | None
    ) -> Posted:
        posted = Posted(
            channel,
            self.new_ts(),
            self.bot_user_id,
            text,
            time.monotonic(),
            thread_ts,
            blocks,
            is_bot=True,
        )
        self.messages[(channel, posted.ts)] = posted
        self.status[(channel, thread_ts or posted.ts)] = ""
        self.check_pings(posted.visible, text)
        if self.echo_bot_events:
            event = self.message_json(posted) | {
                "channel": channel,
                "event_ts": posted.ts,
                "channel_type": self._kind(channel),
            }
            self._deliver_event(event)
        return posted

    def message_json(self, posted: Posted) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": posted.user,
            "text": posted.text,
            "ts": posted.ts,
            "team": self.team_id,
        }
        if posted.is_bot:
            message["bot_id"] = self.bot_id
        if posted.blocks:
            message["blocks"] = posted.blocks
        if posted.thread_ts:
            message["thread_ts"] = posted.thread_ts
        return message

    def echo_changed(self, posted: Posted) -> None:
        if self.echo_bot_events:
            self._deliver_event(
                {
                    "type": "message",
                    "subtype": "message_changed",
                    "channel": posted.channel,
                    "hidden": True,
                    "ts": self.new_ts(),
                    "event_ts": posted.ts,
                    "message": self.message_json(posted),
                    "channel_type": self._kind(posted.channel),
                }
            )

    def check_pings(self, *texts: str) -> None:
        for text in texts:
            if PING.search(text):
                self.pings.append(text)

    def _kind(self, channel: str) -> str:
        """The event's channel_type: "channel" (public), "group" (private), "im"."""
        kind = self.channels.get(channel, "channel")
        return kind if kind in ("im", "mpim", "group") else "channel"

    # Files and response_url

    def add_file(
        self, name: str, mime: str, data: bytes, *, login_page: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """A file object as in message events; `login_page` acts as if files:read is missing;
        `fields` adds to it (a voice clip's `subtype="slack_audio"` and `duration_ms`)."""
        file_id = f"F{next(self._ids):06d}"
        self.files[file_id] = (mime, data, login_page)
        url = f"http://127.0.0.1:{self.port}/files/{file_id}/{name}"
        self.file_objects[file_id] = found = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mime,
            "size": len(data),
            "url_private": url,
            "url_private_download": url + "?download=1",
            **fields,
        }
        return dict(found)

    async def _file(self, request: web.Request) -> web.Response:
        mime, data, login_page = self.files.get(request.match_info["file_id"], ("", b"", True))
        authorised = request.headers.get("Authorization") == f"Bearer {self.bot_token}"
        if not authorised or login_page or not mime:
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        return web.Response(body=data, content_type=mime)

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["at"] = time.monotonic()
        body["id"] = request.match_info["id"]
        self.responses.append(body)
        return web.Response(text="ok")

    # Delivering events and commands to the app

    def _deliver_event(self, event: dict[str, Any], event_id: str = "") -> str:
        event_id = event_id or f"Ev{next(self._ids):08d}"
        payload = event_callback(self.team_id, self.bot_user_id, event, event_id)
        if self.mode == "socket":
            self.hub.send("events_api", payload)
        else:
            self._spawn(self._post_http(as_json(payload), "application/json", event_id))
        return event_id

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_http(self, body: str, content_type: str, event_id: str) -> None:
        assert self._session is not None
        for attempt in range(4):
            record = Delivery(event_id, content_type, {}, time.monotonic(), attempt)
            self.http_deliveries.append(record)
            retry = (attempt, "http_error") if attempt else None
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await post_signed(
                    self._session,
                    self.http_url,
                    body,
                    secret=self.signing_secret,
                    content_type=content_type,
                    retry=retry,
                )
                if status == 200:
                    record.acked = time.monotonic()
                    return

    def user_message(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        mention_first: bool = True,
    ) -> str:
        """A person posts; returns the ts. A channel @mention arrives twice, as Slack sends it."""
        if channel not in self.channels:
            self.add_channel(channel, "im" if channel.startswith("D") else "channel")
        ts = self.new_ts()
        root = self.messages.get((channel, thread_ts)) if thread_ts else None
        self.messages[(channel, ts)] = Posted(channel, ts, user, text, time.monotonic(), thread_ts)
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": self.team_id,
            "channel_type": self._kind(channel),
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = root.user if root else user
        if files:
            event["files"] = files
            event["subtype"] = "file_share"
        events = [event]
        if f"<@{self.bot_user_id}>" in text and self._kind(channel) != "im":
            mention = {k: v for k, v in event.items() if k not in ("channel_type", "subtype")}
            mention["type"] = "app_mention"
            events.insert(0 if mention_first else 1, mention)
        for each in events:
            self._deliver_event(each)
        return ts

    def deliver_event(self, event: dict[str, Any], event_id: str = "") -> str:
        """Deliver a raw event (reusing `event_id` makes it a Slack retry)."""
        return self._deliver_event(event, event_id)

    def add_user_message(self, user: str, channel: str, text: str) -> str:
        """A message that exists in the workspace, without delivering any event for it."""
        ts = self.new_ts()
        self.messages[(channel, ts)] = Posted(channel, ts, user, text, time.monotonic())
        return ts

    def edit_user_message(self, channel: str, ts: str, text: str) -> None:
        posted = self.messages[(channel, ts)]
        posted.text = text
        self._deliver_event(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": channel,
                "ts": self.new_ts(),
                "event_ts": self.new_ts(),
                "hidden": True,
                "message": self.message_json(posted) | {"edited": {"user": posted.user}},
                "channel_type": self._kind(channel),
            }
        )

    def delete_user_message(self, channel: str, ts: str) -> None:
        self.messages[(channel, ts)].deleted = True
        self._deliver_event(
            {
                "type": "message",
                "subtype": "message_deleted",
                "channel": channel,
                "ts": self.new_ts(),
                "deleted_ts": ts,
                "hidden": True,
                "channel_type": self._kind(channel),
            }
        )

    def command_fields(self, command: str, text: str, user: str, channel: str) -> dict[str, str]:
        rid = f"R{next(self._ids)}"
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": user,
            "user_name": self.users.get(user, user).lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0FAKE",
            "is_enterprise_install": "false",
            "response_url": f"http://127.0.0.1:{self.port}/respond/{rid}",
            "trigger_id": f"T.{rid}",
        }

    def slash_command(self, command: str, text: str, user: str, channel: str) -> str:
        """A person runs a slash command; returns the envelope (or request) id."""
        if channel not in self.channels:
            self.add_channel(channel, "im" if channel.startswith("D") else "channel")
        fields = self.command_fields(command, text, user, channel)
        if self.mode == "socket":
            return self.hub.send("slash_commands", fields, accepts_response=True)
        rid = fields["trigger_id"]
        self._spawn(self._post_http(form_body(fields), "application/x-www-form-urlencoded", rid))
        return rid

    def message_shortcut(self, callback_id: str, user: str, channel: str, ts: str) -> str:
        """A person picks a message shortcut on message `ts`; returns the envelope (or
        request) id. The payload is Slack's `message_action`, with the message as shown."""
        posted = self.messages[(channel, ts)]
        message = self.message_json(posted)
        replies = [m for m in self.messages.values() if m.channel == channel and m.thread_ts == ts]
        if replies:  # a thread's root carries its own ts as thread_ts, as in Slack
            message |= {"thread_ts": ts, "reply_count": len(replies)}
        rid = f"R{next(self._ids)}"
        self.triggers[f"T.{rid}"] = user
        kind = self._kind(channel)
        payload = {
            "type": "message_action",
            "token": "fake-verification-token",
            "action_ts": self.new_ts(),
            "team": {"id": self.team_id, "domain": "fake"},
            "user": {
                "id": user,
                "username": self.users.get(user, user).lower(),
                "name": self.users.get(user, user).lower(),
                "team_id": self.team_id,
            },
            "channel": {
                "id": channel,
                "name": "directmessage" if kind == "im" else channel.lower(),
            },
            "is_enterprise_install": False,
            "enterprise": None,
            "api_app_id": "A0FAKE",
            "callback_id": callback_id,
            "trigger_id": f"T.{rid}",
            "response_url": f"http://127.0.0.1:{self.port}/respond/{rid}",
            "message_ts": ts,
            "message": message,
        }
        if self.mode == "socket":
            return self.hub.send("interactive", payload)
        fields = {"payload": json.dumps(payload)}
        self._spawn(self._post_http(form_body(fields), "application/x-www-form-urlencoded", rid))
        return rid

    # Queries for assertions

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[Posted]:
        """The bot's live messages in one thread (or top level), oldest first."""
        found = [
            m
            for m in self.messages.values()
            if m.is_bot and not m.deleted and m.channel == channel and m.thread_ts == thread_ts
        ]
        return sorted(found, key=lambda m: m.ts)

    def thread_text(self, channel: str, thread_ts: str | None) -> str:
        return "\n".join(m.visible for m in self.bot_messages(channel, thread_ts))

    def count(self, method: str, ok: bool | None = None) -> int:
        return sum(1 for c in self.calls if c.method == method and (ok is None or c.ok == ok))

    def errors(self) -> list[Call]:
        return [c for c in self.calls if not c.ok]
