"""Discord-style rate limit buckets: fixed windows that open on the first request.

A window of `per` seconds opens with the first request after the previous one expired and
admits `limit` requests; Discord reports it in X-RateLimit-* headers and refuses the rest
with 429 until it resets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Bucket:
    limit: int
    per: float
    name: str
    opened: float = 0.0
    used: int = 0

    def _roll(self, now: float) -> None:
        if now >= self.opened + self.per:
            self.opened = now
            self.used = 0

    def take(self, now: float) -> bool:
        self._roll(now)
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def reset_after(self, now: float) -> float:
        return max(0.0, self.opened + self.per - now)

    def headers(self, now: float) -> dict[str, str]:
        after = self.reset_after(now)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - self.used)),
            "X-RateLimit-Reset": f"{time.time() + after:.3f}",
            "X-RateLimit-Reset-After": f"{after:.3f}",
            "X-RateLimit-Bucket": self.name,
        }


@dataclass
class Limits:
    """Every bucket of the fake, created on first use."""

    per_channel: tuple[int, float] = (5, 5.0)
    per_webhook: tuple[int, float] = (5, 5.0)
    global_: tuple[int, float] = (50, 1.0)
    enabled: bool = True
    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)
    global_bucket: Bucket | None = None

    def bucket(self, kind: str, major: str) -> Bucket:
        key = (kind, major)
        found = self.buckets.get(key)
        if found is None:
            limit, per = self.per_webhook if kind == "webhook" else self.per_channel
            # The same hash for every channel: Discord's bucket hash names the route family,
            # the major parameter (channel id) picks the actual bucket.
            found = self.buckets[key] = Bucket(limit, per, f"fake-{kind}")
        return found

    def global_take(self, now: float) -> bool:
        if self.global_bucket is None:
            self.global_bucket = Bucket(*self.global_, name="global")
        return self.global_bucket.take(now)

    def global_retry_after(self, now: float) -> float:
        assert self.global_bucket is not None
        return self.global_bucket.reset_after(now)


def too_many(retry_after: float, *, scope: str, bucket: Bucket | None, now: float) -> web.Response:
    """A 429 as Discord sends it (a `Via` header tells discord.py it is not Cloudflare)."""
    is_global = scope == "global"
    body = {
        "message": "You are being rate limited.",
        "retry_after": round(retry_after, 3),
        "global": is_global,
        "code": 0,
    }
    headers = {
        "Content-Type": "application/json",
        "Via": "1.1 google",
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Scope": scope,
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    if bucket is not None:
        headers.update(bucket.headers(now))
        headers["X-RateLimit-Remaining"] = "0"
        headers["X-RateLimit-Reset-After"] = f"{retry_after:.3f}"
        headers["X-RateLimit-Reset"] = f"{time.time() + retry_after:.3f}"
    return web.Response(status=429, body=json.dumps(body).encode(), headers=headers)
