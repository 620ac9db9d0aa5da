"""SlackAdapter: the real slack-bolt AsyncApp over Socket Mode or signed HTTP events.

Bolt acknowledges every event before its listener runs; the listeners here only start
a task and return, so slow work never delays an acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack import buttons, credentials, home
from adapters.slack.agent import Agent
from adapters.slack.api import APP_TOKEN, BOT_TOKEN, SlackApi
from adapters.slack.ask_modal import ASK_ABOUT_MESSAGE, AskAbout
from adapters.slack.ask_modal import MODAL as ASK_MODAL
from adapters.slack.clicks import Clicks
from adapters.slack.events import Events
from adapters.slack.http import Endpoint
from adapters.slack.links import SlackLinks
from adapters.slack.people import Names
from adapters.slack.places import Channels
from adapters.slack.recovery import SlackRecoverer
from adapters.slack.runtime import Runtime
from adapters.slack.settings import SlackSettings
from adapters.slack.shortcuts import SUMMARIZE_THREAD, Shortcuts
from adapters.slack.slash import COMMANDS, Slash
from bot.engine import Engine

log = logging.getLogger("teambot.slack")

EVENTS_PATH = "/slack/events"


def _not_token_skipped(record: logging.LogRecord) -> bool:
    return record.getMessage() != warning_client_prioritized_and_token_skipped()


_NOT_TOKEN_SKIPPED = _not_token_skipped


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
        self.rt.pacer.journal = engine.journal
        self.agent = self.rt.agent = Agent(self.rt.api, settings.prompts)
        self.app = self._build_app()
        self._events = Events(self.rt)
        self._slash = Slash(self.rt)
        self._shortcuts = Shortcuts(self.rt)
        self._ask = AskAbout(self.rt)
        self._clicks = Clicks(self.rt)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None

    def _build_app(self) -> AsyncApp:
        verify = bool(self.settings.signing_secret)
        bolt_log = logging.getLogger("teambot.slack.bolt")
        if _NOT_TOKEN_SKIPPED not in bolt_log.filters:
            # Bolt warns that SLACK_BOT_TOKEN in the environment goes unused when a client
            # is given; the client carries that very token, so the line is only noise.
            bolt_log.addFilter(_NOT_TOKEN_SKIPPED)
        # Bolt checks the bot token (auth.test) before it hands an event over.
        credentials.quiet(
            logging.getLogger("slack_bolt.AsyncSingleTeamAuthorization"), BOT_TOKEN, "an event"
        )
        app = AsyncApp(
            client=self.client,
            signing_secret=self.settings.signing_secret or None,
            request_verification_enabled=verify,
            logger=bolt_log,
        )
        app.event("app_mention")(self._on_event)
        app.event("message")(self._on_event)
        for name in COMMANDS:
            app.command(name)(self._on_command)
        app.shortcut(SUMMARIZE_THREAD)(self._on_summarize_thread)
        app.shortcut(ASK_ABOUT_MESSAGE)(self._on_ask_about)
        app.view(ASK_MODAL)(self._on_ask_submitted)
        app.action(re.compile("^(" + "|".join(buttons.ACTIONS) + ")$"))(self._on_click)
        app.event("app_home_opened")(self._on_home_opened)
        app.event("assistant_thread_started")(self._on_thread_started)
        for name in ("assistant_thread_context_changed", "app_context_changed"):
            app.event(name)(self._on_context_changed)
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

    async def _on_ask_about(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        try:
            await self._ask.open(body)  # now: the trigger expires 3 s after the click
        except Exception:
            log.exception("could not open the %s modal", ASK_ABOUT_MESSAGE)

    async def _on_ask_submitted(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        await ack()
        self._spawn(self._ask.submitted(body, view))

    async def _on_click(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        click = buttons.click(body)
        if click is not None:
            self._spawn(self._clicks.handle(click))

    async def _on_home_opened(self, body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        if event.get("tab") == "home":
            self._spawn(self._publish_home(str(body.get("team_id") or ""), event))
        else:
            self._spawn(self.agent.home_opened(event))

    async def _publish_home(self, team: str, event: dict[str, Any]) -> None:
        user, channel = str(event.get("user") or ""), str(event.get("channel") or "")
        view = await home.view(self.rt.engine, team, user, channel)
        await self.client.views_publish(user_id=user, view=view)

    async def _on_thread_started(self, body: dict[str, Any]) -> None:
        self._spawn(self.agent.thread_started(body.get("event") or {}))

    async def _on_context_changed(self, body: dict[str, Any]) -> None:
        self.agent.note(body.get("event") or {})

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

    @property
    def connected(self) -> bool:
        """Whether events can arrive now: the Socket Mode session is open, or the HTTP
        server listens (for /healthz)."""
        if not self.ready.is_set() or self._closed.is_set():
            return False
        if self._socket is not None:
            session = getattr(self._socket.client, "current_session", None)
            return session is not None and not session.closed
        return self._runner is not None

    # Lifecycle

    async def run(self) -> None:
        """Connect (Socket Mode with an app token, else HTTP) and serve until close()."""
        # One connection pool for every Web API call and download; without it slack-sdk
        # opens a new aiohttp session per call.
        self.rt.session = self.client.session = aiohttp.ClientSession()
        try:
            auth = await self._auth_test()
            self.rt.bot_user_id = str(auth.get("user_id") or "")
            self.rt.bot_id = str(auth.get("bot_id") or "")
            links = SlackLinks(str(auth.get("team_id") or ""), str(auth.get("url") or ""))
            self.rt.engine.register_links("slack", links)
            if auth.get("url"):  # for `teambot feedback`'s links, offline (bot/cli.py)
                await self.rt.engine.set_meta("slack:workspace_url", str(auth["url"]))
            self.rt.engine.register_recoverer("slack", SlackRecoverer(self.rt.api))
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

    async def _auth_test(self) -> AsyncSlackResponse:
        """Who the bot is; a refused bot token ends the start-up naming SLACK_BOT_TOKEN."""
        try:
            return await self.client.auth_test()
        except SlackApiError as exc:
            code = credentials.refused_code(exc)
            if code is None:
                raise
            raise credentials.at_start(BOT_TOKEN, code) from None

    async def _start_socket(self) -> None:
        # The socket client would retry a refused app token forever, a traceback each
        # time: ask once first, so start-up ends naming SLACK_APP_TOKEN instead.
        try:
            await self.client.apps_connections_open(app_token=self.settings.app_token)
        except SlackApiError as exc:
            code = credentials.refused_code(exc)
            if code is not None:
                raise credentials.at_start(APP_TOKEN, code) from None
            log.info("apps.connections.open failed (%s); the socket will retry", exc)
        socket_log = logging.getLogger("teambot.slack.socket")
        credentials.quiet(socket_log, APP_TOKEN, "connecting Socket Mode")
        self._socket = AsyncSocketModeHandler(
            self.app,
            self.settings.app_token,
            logger=socket_log,
            web_client=self.client,
            ping_interval=self.ping_interval,
        )
        await self._socket.connect_async()  # type: ignore[no-untyped-call]

    async def _start_http(self) -> None:
        server = web.Application()
        server.router.add_post(EVENTS_PATH, Endpoint(self.app, self.settings.signing_secret).handle)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.settings.port)
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])

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
