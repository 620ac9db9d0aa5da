"""Slack-style rate limits for the fake: sliding windows per method and scope.

Slack documents limits as "N per minute per workspace" (tiers) and "about 1 per
second per channel" for chat.postMessage with short bursts. The fake counts calls in
a sliding window, which is stricter than a token bucket of the same rate, so a client
that is never refused here is safe on Slack.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    limit: int
    window: float
    per_channel: bool = False


# Tier 2 = 20/min, Tier 3 = 50/min, Tier 4 = 100/min (per workspace).
SLACK_RULES: dict[str, Rule] = {
    "chat.update": Rule(50, 60.0),
    "chat.postMessage": Rule(3, 3.0, per_channel=True),
    "chat.delete": Rule(50, 60.0),
    # Native streaming: start and stop Tier 2, append Tier 4 (docs.slack.dev method pages).
    "chat.startStream": Rule(20, 60.0),
    "chat.stopStream": Rule(20, 60.0),
    "chat.appendStream": Rule(100, 60.0),
    "chat.postEphemeral": Rule(100, 60.0),
    "views.publish": Rule(100, 60.0),
    "views.open": Rule(100, 60.0),
    "assistant.threads.setSuggestedPrompts": Rule(100, 60.0),
    "assistant.threads.setTitle": Rule(100, 60.0),
    "reactions.add": Rule(50, 60.0),
    "reactions.remove": Rule(50, 60.0),
    "users.info": Rule(100, 60.0),
    "usergroups.list": Rule(20, 60.0),
    "conversations.info": Rule(50, 60.0),
    "apps.connections.open": Rule(50, 60.0),
}


class Limiter:
    def __init__(self, rules: dict[str, Rule]) -> None:
        self.rules = rules
        self._seen: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def check(self, method: str, channel: str, now: float) -> int | None:
        """Count a call; return Retry-After seconds if it is over the limit."""
        rule = self.rules.get(method)
        if rule is None:
            return None
        times = self._seen[(method, channel if rule.per_channel else "")]
        while times and times[0] <= now - rule.window:
            times.popleft()
        if len(times) >= rule.limit:
            return max(1, math.ceil(times[0] + rule.window - now))
        times.append(now)
        return None
