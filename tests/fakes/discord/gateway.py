"""The fake gateway websocket: HELLO, IDENTIFY/READY, RESUME/RESUMED, heartbeats, dispatch.

Sharded as Discord shards: an IDENTIFY's `shard: [id, count]` makes a session of that shard,
which is told only of the guilds where `(guild_id >> 22) % count == id` (READY's list, their
GUILD_CREATEs and events) and, on shard 0 only, of DMs. An IDENTIFY without `shard` is
shard [0, 1]: everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.fakes.discord import payloads
from tests.fakes.discord.rest import local_port

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

log = logging.getLogger("fake.discord.gateway")

INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
CLOSE_INVALID_SHARD = 4010
GUILD_EVENTS = ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE")  # the guild is the payload


def shard_of(guild_id: str | int, count: int) -> int:
    """The shard that carries a guild's events, by Discord's formula."""
    return (int(guild_id) >> 22) % count


@dataclass(frozen=True)
class Identify:
    shard: list[int] | None  # as the client sent it; None: not sharded
    port: int  # the fake's port it came in on


@dataclass
class Session:
    id: str
    intents: int
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    shard: tuple[int, int] = (0, 1)

    def has(self, bit: int) -> bool:
        return bool(self.intents & bit)

    def receives(self, guild_id: str | None) -> bool:
        """Whether events of this guild (None: a DM) come through this session."""
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return shard_of(guild_id, count) == shard_id

    @property
    def live(self) -> bool:
        return self.ws is not None and not self.ws.closed


class Gateway:
    """One session per shard, each with a replayable event log for RESUME."""

    def __init__(self, fake: FakeDiscord, heartbeat_interval_ms: int = 41250) -> None:
        self.fake = fake
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[int, Session] = {}  # by shard id; the latest IDENTIFY wins
        self.identifies = 0
        self.identified: list[Identify] = []  # every IDENTIFY, in order
        self.closed_4010 = 0
        self.identify_refused = 0  # IDENTIFYs too soon in their bucket (see identify_window_s)
        self._identified_at: dict[int, float] = {}  # bucket -> time of its last IDENTIFY
        self.resumes = 0
        self.resume_paths: list[str] = []
        self.heartbeats = 0
        self.closed_4014 = 0
        # Set while every shard of the bot's shard count has a live session.
        self.connected = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def session(self) -> Session | None:
        """Shard 0's session (the only one of an unsharded bot)."""
        return self.sessions.get(0)

    def _refresh(self) -> None:
        live = [s for s in self.sessions.values() if s.live]
        count = max((s.shard[1] for s in live), default=0)
        covered = {s.shard[0] for s in live if s.shard[1] == count}
        if count and covered == set(range(count)):
            self.connected.set()
        else:
            self.connected.clear()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(
            json.dumps(
                {
                    "op": 10,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                    "s": None,
                    "t": None,
                }
            )
        )
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                await self._on_frame(ws, request, json.loads(msg.data))
        finally:
            for session in self.sessions.values():
                if session.ws is ws:
                    session.ws = None
            self._refresh()
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, request: web.Request, frame: dict[str, Any]
    ) -> None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == 1:
            self.heartbeats += 1
            await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
        elif op == 2:
            await self._identify(ws, data, local_port(request))
        elif op == 6:
            await self._resume(ws, request.path, data)

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any], port: int) -> None:
        self.identifies += 1
        sharded = data.get("shard")
        self.identified.append(Identify(list(sharded) if sharded is not None else None, port))
        shard = (int(sharded[0]), int(sharded[1])) if sharded is not None else (0, 1)
        if not 0 <= shard[0] < shard[1]:
            self.closed_4010 += 1
            await ws.close(code=CLOSE_INVALID_SHARD, message=b"Invalid shard.")
            return
        if not await self._identify_allowed(ws, shard[0]):
            return
        intents = int(data.get("intents", 0))
        if intents & INTENT_MESSAGE_CONTENT and not self.fake.message_content_allowed:
            self.closed_4014 += 1
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        async with self._lock:
            session = Session(payloads.snowflake(), intents, ws=ws, shard=shard)
            self.sessions[shard[0]] = session
            guilds = [gid for gid in self.fake.guilds if session.receives(gid)]
            ready: dict[str, Any] = {
                "v": 10,
                "user": self.fake.bot_user,
                "guilds": [{"id": gid, "unavailable": True} for gid in guilds],
                "session_id": session.id,
                "resume_gateway_url": self.fake.resume_gateway_url,
                "application": {"id": self.fake.app_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            if sharded is not None:
                ready["shard"] = list(shard)
            await self._send(session, "READY", ready)
            for gid in guilds:
                await self._send(session, "GUILD_CREATE", self.fake.guild_payload(gid))
        self._refresh()

    async def _identify_allowed(self, ws: web.WebSocketResponse, shard_id: int) -> bool:
        bucket = shard_id % max(1, self.fake.max_concurrency)
        now = time.monotonic()
        last = self._identified_at.get(bucket)
        if last is not None and now - last < self.fake.identify_window_s:
            self.identify_refused += 1
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return False
        self._identified_at[bucket] = now
        return True

    async def _resume(self, ws: web.WebSocketResponse, path: str, data: dict[str, Any]) -> None:
        session = next((s for s in self.sessions.values() if s.id == data.get("session_id")), None)
        if session is None:
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return
        self.resumes += 1
        self.resume_paths.append(path)
        async with self._lock:
            session.ws = ws
            after = int(data.get("seq") or 0)
            for frame in session.sent:
                if frame["s"] > after:
                    await ws.send_str(json.dumps(frame))
            await self._send(session, "RESUMED", {})
        self._refresh()

    async def _send(self, session: Session, name: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": name, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.ws is not None and not session.ws.closed:
            try:
                await session.ws.send_str(json.dumps(frame))
            except ConnectionError:
                session.ws = None

    async def dispatch(self, name: str, data: dict[str, Any]) -> None:
        """Send an event to the session of its guild's shard (DMs: shard 0); while that
        session is disconnected the event waits for its RESUME."""
        guild_id = data.get("id") if name in GUILD_EVENTS else data.get("guild_id")
        for session in list(self.sessions.values()):
            if not session.receives(None if guild_id is None else str(guild_id)):
                continue
            shown = self._apply_intents(session, name, data)
            if shown is None:
                continue
            async with self._lock:
                await self._send(session, name, shown)

    def _apply_intents(
        self, session: Session, name: str, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        if not name.startswith("MESSAGE_"):
            return data
        in_guild = "guild_id" in data
        if in_guild and not session.has(INTENT_GUILD_MESSAGES):
            return None
        if not in_guild and not session.has(INTENT_DIRECT_MESSAGES):
            return None
        if (
            name in ("MESSAGE_DELETE", "MESSAGE_DELETE_BULK")
            or session.has(INTENT_MESSAGE_CONTENT)
            or not in_guild
        ):
            return data
        if self._exempt(data):
            return data
        # Without MESSAGE_CONTENT Discord blanks these fields instead of dropping the event.
        return {**data, "content": "", "attachments": [], "embeds": [], "components": []}

    def _exempt(self, data: dict[str, Any]) -> bool:
        bot_id = self.fake.bot_id
        if data.get("author", {}).get("id") == bot_id:
            return True
        # A reply to the bot is exempt only with "ping on reply", which puts it in mentions.
        return any(u.get("id") == bot_id for u in data.get("mentions", []))

    def _of(self, shard: int | None) -> list[Session]:
        return [s for k, s in self.sessions.items() if shard is None or k == shard]

    async def drop(self, code: int = 4000, *, shard: int | None = None) -> None:
        """Server-side disconnect (Discord does this on restarts) of one shard's session or
        all of them; the client should RESUME."""
        for session in self._of(shard):
            if session.ws is not None:
                ws, session.ws = session.ws, None
                self._refresh()
                await ws.close(code=code, message=b"fake: going away")

    async def request_reconnect(self, *, shard: int | None = None) -> None:
        """Opcode 7: Discord asks the client to reconnect and resume."""
        for session in self._of(shard):
            if session.ws is not None:
                await session.ws.send_str(json.dumps({"op": 7, "d": None, "s": None, "t": None}))
