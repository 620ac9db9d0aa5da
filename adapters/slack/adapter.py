"""SlackAdapter: the real slack-bolt AsyncApp over Socket Mode or signed HTTP events.

Bolt acknowledges every event before its listener runs; the listeners here only start
a task and return, so slow work never delays an acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import SlackApi
from adapters.slack.events import Events
from adapters.slack.links import SlackLinks
from adapters.slack.people import Names
from adapters.slack.places import Channels
from adapters.slack.runtime import Runtime
from adapters.slack.settings import SlackSettings
from adapters.slack.shortcuts import SUMMARIZE_THREAD, Shortcuts
from adapters.slack.slash import COMMANDS, Slash
from bot.engine import Engine

log = logging.getLogger("teambot.slack")

EVENTS_PATH = "/slack/events"


class SlackAdapter:
    def __init__(
        self,
        engine: Engine,
        settings: SlackSettings,
        *,
        host: str = "0.0.0.0",
        ping_interval: float = 10.0,
    ) -> None:
        self.settings = settings
        self.host = host
        self.ping_interval = ping_interval
        self.http_port = 0
        self.ready = asyncio.Event()
        client = AsyncWebClient(token=settings.bot_token, base_url=settings.api_base_url)
        # The scheduler keeps replies under the limits; this covers whatever else Slack
        # throttles.
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
        self.client = client
        self.rt = Runtime(
            engine, client, SlackApi(client), Names(client), Channels(client), settings.bot_token
        )
        engine.register_poster("slack", self.rt.post)
        self.app = self._build_app()
        self._events = Events(self.rt)
        self._slash = Slash(self.rt)
        self._shortcuts = Shortcuts(self.rt)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None

    def _build_app(self) -> AsyncApp:
        verify = bool(self.settings.signing_secret)
        app = AsyncApp(
            client=self.client,
            signing_secret=self.settings.signing_secret or None,
            request_verification_enabled=verify,
            logger=logging.getLogger("teambot.slack.bolt"),
        )
        app.event("app_mention")(self._on_event)
        app.event("message")(self._on_event)
        for name in COMMANDS:
            app.command(name)(self._on_command)
        app.shortcut(SUMMARIZE_THREAD)(self._on_summarize_thread)
        return app

    # Listeners: start the work and return at once

    async def _on_event(self, body: dict[str, Any]) -> None:
        self._spawn(self._events.handle(body))

    async def _on_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        self._spawn(self._slash.handle(command, respond))

    async def _on_summarize_thread(
        self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        self._spawn(self._shortcuts.summarize_thread(body, respond))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("Slack event handling failed")

    @property
    def busy(self) -> int:
        """How many events and commands are still being worked on."""
        return len(self._tasks)

    # Lifecycle

    async def run(self) -> None:
        """Connect (Socket Mode with an app token, else HTTP) and serve until close()."""
        # One connection pool for every Web API call and download; without it slack-sdk
        # opens a new aiohttp session per call.
        self.rt.session = self.client.session = aiohttp.ClientSession()
        try:
            auth = await self.client.auth_test()
            self.rt.bot_user_id = str(auth.get("user_id") or "")
            self.rt.bot_id = str(auth.get("bot_id") or "")
            links = SlackLinks(str(auth.get("team_id") or ""), str(auth.get("url") or ""))
            self.rt.engine.register_links("slack", links)
            self._shortcuts.links = links
            if self.settings.socket_mode:
                await self._start_socket()
            else:
                await self._start_http()
            self.ready.set()
            log.info("Slack adapter running (%s)", "socket mode" if self._socket else "HTTP")
            await self._closed.wait()
        finally:
            await self._stop()

    async def _start_socket(self) -> None:
        self._socket = AsyncSocketModeHandler(
            self.app,
            self.settings.app_token,
            web_client=self.client,
            ping_interval=self.ping_interval,
        )
        await self._socket.connect_async()  # type: ignore[no-untyped-call]

    async def _start_http(self) -> None:
        server = web.Application()
        server.router.add_post(EVENTS_PATH, self._http_request)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.settings.port)
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])

    async def _http_request(self, request: web.Request) -> web.Response:
        response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def close(self, grace: float = 1.5) -> None:
        """Stop taking events, give replies in progress `grace` seconds, then stop run()."""
        try:
            await self._stop_intake()
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._closed.set()

    async def _stop_intake(self) -> None:
        if self._socket:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def _stop(self) -> None:
        await self._stop_intake()
        await self.rt.pacer.close()
        if self.rt.session:
            await self.rt.session.close()
            self.rt.session = self.client.session = None
