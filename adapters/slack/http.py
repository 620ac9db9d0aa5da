"""The HTTP Events API endpoint: the signature is checked before anything is parsed.

Without a valid signature (or with a stale timestamp, a replay) the answer is 401 and the
body is never looked at. A signed body that is neither a JSON object nor form data Slack
would send (a slash command, or an interaction's `payload`) is 400. Only then does the
request reach slack-bolt, so a bad body never becomes a 500 or a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger("teambot.slack")


class Endpoint:
    def __init__(self, app: AsyncApp, signing_secret: str) -> None:
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._signed(body, request.headers):
            return web.Response(status=401, text="invalid signature")
        headers = request.headers
        text = readable(body, request.content_type)
        if text is None:
            log.info("a signed request with a body that is not Slack's (%s)", request.content_type)
            return web.Response(status=400, text="unreadable body")
        bolt = AsyncBoltRequest(body=text, query=request.query_string, headers=dict(headers))
        return await to_aiohttp_response(await self.app.async_dispatch(bolt))

    def _signed(self, body: bytes, headers: Mapping[str, str]) -> bool:
        stamp, signature = (
            headers.get("X-Slack-Request-Timestamp"),
            headers.get("X-Slack-Signature"),
        )
        try:
            return self.verifier.is_valid(body, stamp, signature)
        except ValueError:  # a timestamp that is not a number
            return False


def readable(body: bytes, content_type: str) -> str | None:
    """`body` as text when it is a request Slack sends, else None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if content_type == "application/json" or text.lstrip().startswith("{"):
        return text if isinstance(_json(text), dict) else None
    form = parse_qs(text)
    if "payload" in form:
        return text if isinstance(_json(form["payload"][0]), dict) else None
    return text if "command" in form else None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
