"""The fake gateway websocket: HELLO, IDENTIFY/READY, RESUME/RESUMED, heartbeats, dispatch."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.fakes.discord import payloads

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

log = logging.getLogger("fake.discord.gateway")

INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15


@dataclass
class Session:
    id: str
    intents: int
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None

    def has(self, bit: int) -> bool:
        return bool(self.intents & bit)


class Gateway:
    """One bot connection at a time, with a replayable event log for RESUME."""

    def __init__(self, fake: FakeDiscord, heartbeat_interval_ms: int = 41250) -> None:
        self.fake = fake
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.session: Session | None = None
        self.identifies = 0
        self.resumes = 0
        self.resume_paths: list[str] = []
        self.heartbeats = 0
        self.closed_4014 = 0
        self.connected = asyncio.Event()
        self._lock = asyncio.Lock()

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
                await self._on_frame(ws, request.path, json.loads(msg.data))
        finally:
            if self.session is not None and self.session.ws is ws:
                self.session.ws = None
                self.connected.clear()
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, path: str, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == 1:
            self.heartbeats += 1
            await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
        elif op == 2:
            await self._identify(ws, data)
        elif op == 6:
            await self._resume(ws, path, data)

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies += 1
        intents = int(data.get("intents", 0))
        if intents & INTENT_MESSAGE_CONTENT and not self.fake.message_content_allowed:
            self.closed_4014 += 1
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        async with self._lock:
            self.session = Session(payloads.snowflake(), intents, ws=ws)
            ready = {
                "v": 10,
                "user": self.fake.bot_user,
                "guilds": [{"id": gid, "unavailable": True} for gid in self.fake.guilds],
                "session_id": self.session.id,
                "resume_gateway_url": self.fake.resume_gateway_url,
                "application": {"id": self.fake.app_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            await self._send(self.session, "READY", ready)
            for gid in self.fake.guilds:
                await self._send(self.session, "GUILD_CREATE", self.fake.guild_payload(gid))
        self.connected.set()

    async def _resume(self, ws: web.WebSocketResponse, path: str, data: dict[str, Any]) -> None:
        session = self.session
        if session is None or data.get("session_id") != session.id:
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
        self.connected.set()

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
        """Send an event to the bot; while it is disconnected the event waits for RESUME."""
        session = self.session
        if session is None:
            return
        shown = self._apply_intents(session, name, data)
        if shown is None:
            return
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

    async def drop(self, code: int = 4000) -> None:
        """Server-side disconnect (Discord does this on restarts); the client should RESUME."""
        session = self.session
        if session is not None and session.ws is not None:
            ws, session.ws = session.ws, None
            self.connected.clear()
            await ws.close(code=code, message=b"fake: going away")

    async def request_reconnect(self) -> None:
        """Opcode 7: Discord asks the client to reconnect and resume."""
        session = self.session
        if session is not None and session.ws is not None:
            await session.ws.send_str(json.dumps({"op": 7, "d": None, "s": None, "t": None}))
