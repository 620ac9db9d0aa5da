"""Event payloads as Slack builds them, and signed HTTP delivery (Events API)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's v0 request signature: HMAC-SHA256 over `v0:{timestamp}:{body}`."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def event_callback(
    team_id: str, bot_user_id: str, event: dict[str, Any], event_id: str
) -> dict[str, Any]:
    return {
        "token": "fake-verification-token",
        "team_id": team_id,
        "api_app_id": "A0FAKE",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    body: str,
    *,
    secret: str,
    content_type: str = "application/json",
    timestamp: str | None = None,
    signature: str | None = None,
    retry: tuple[int, str] | None = None,
) -> tuple[int, str]:
    """POST `body` like Slack does; `signature=""` sends no signature headers at all."""
    stamp = timestamp if timestamp is not None else str(int(time.time()))
    headers = {"Content-Type": content_type}
    if signature != "":
        headers["X-Slack-Request-Timestamp"] = stamp
        headers["X-Slack-Signature"] = signature or sign(secret, stamp, body)
    if retry:
        headers["X-Slack-Retry-Num"] = str(retry[0])
        headers["X-Slack-Retry-Reason"] = retry[1]
    async with session.post(url, data=body.encode(), headers=headers) as response:
        return response.status, await response.text()


def form_body(fields: dict[str, str]) -> str:
    return urlencode(fields)


def as_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload)
