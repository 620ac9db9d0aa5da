"""The Socket Mode side of the fake: hello, envelopes, acks, redelivery, disconnects.

Slack sends each envelope to one open connection and expects `{"envelope_id": ...}`
back within a few seconds; without it the envelope comes again with `retry_attempt`
and `retry_reason`. A `disconnect` message asks the client to open a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.slack.records import Delivery


class SocketHub:
    def __init__(self, ack_timeout: float = 3.0, max_retries: int = 3) -> None:
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.connections: list[web.WebSocketResponse] = []
        self.deliveries: list[Delivery] = []
        self.acks: dict[str, float] = {}
        self.ack_payloads: dict[str, dict[str, Any]] = {}
        self.connects = 0
        self.lose_next = 0
        self._acked: dict[str, asyncio.Event] = {}
        self._connected = asyncio.Event()
        self._ids = itertools.count(1)
        self._rr = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connects += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.connections) + 1,
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                "connection_info": {"app_id": "A0FAKE"},
            }
        )
        self.connections.append(ws)
        self._connected.set()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_frame(message.data)
        finally:
            self._forget(ws)
        return ws

    def _forget(self, ws: web.WebSocketResponse) -> None:
        if ws in self.connections:
            self.connections.remove(ws)
        if not self.connections:
            self._connected.clear()

    def _on_frame(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            return
        envelope_id = frame.get("envelope_id")
        if not envelope_id:
            return
        self.acks.setdefault(envelope_id, time.monotonic())
        if "payload" in frame:
            self.ack_payloads[envelope_id] = frame["payload"]
        event = self._acked.get(envelope_id)
        if event:
            event.set()

    def send(self, kind: str, payload: dict[str, Any], accepts_response: bool = False) -> str:
        """Queue an envelope; it is redelivered until acked (up to max_retries)."""
        envelope_id = f"env-{next(self._ids)}"
        self._acked[envelope_id] = asyncio.Event()
        task = asyncio.create_task(self._deliver(envelope_id, kind, payload, accepts_response))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return envelope_id

    async def _deliver(
        self, envelope_id: str, kind: str, payload: dict[str, Any], accepts_response: bool
    ) -> None:
        acked = self._acked[envelope_id]
        for attempt in range(self.max_retries + 1):
            await self._connected.wait()
            envelope = {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": accepts_response,
                "retry_attempt": attempt,
                "retry_reason": "timeout" if attempt else "",
            }
            record = Delivery(envelope_id, kind, payload, time.monotonic(), attempt)
            self.deliveries.append(record)
            if self.lose_next > 0:  # a frame lost in transit: only a redelivery can save it
                self.lose_next -= 1
            elif self.connections:
                ws = self.connections[next(self._rr) % len(self.connections)]
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(json.dumps(envelope))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), self.ack_timeout)
            if acked.is_set():
                record.acked = self.acks[envelope_id]
                return

    async def disconnect(self, reason: str = "refresh_requested", close_after: float = 0.2) -> None:
        """Ask every client to reconnect, then close the old sockets like Slack does."""
        old = list(self.connections)
        for ws in old:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "disconnect", "reason": reason})
        await asyncio.sleep(close_after)
        for ws in old:
            self._forget(ws)
            await ws.close()

    async def drop(self) -> None:
        """Close every socket without warning (a network blip)."""
        for ws in list(self.connections):
            self._forget(ws)
            await ws.close()

    def unacked(self) -> list[str]:
        return [eid for eid, event in self._acked.items() if not event.is_set()]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.drop()
