"""Slack message links: permalinks built for citations and read back when pasted.

A permalink is https://WORKSPACE.slack.com/archives/CHANNEL/pTS (the ts without its
dot), with `thread_ts` and `cid` for a reply in a thread. The workspace's address comes
from auth.test, so building one costs no API call.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ARCHIVES = re.compile(r"/archives/([A-Z0-9]+)/p(\d{7,})/?", re.IGNORECASE)
SLACK_HOSTS = (".slack.com", ".slack-gov.com")


class SlackLinks:
    def __init__(self, team: str, workspace_url: str) -> None:
        self.team = team
        self.base = workspace_url.rstrip("/") + "/" if workspace_url else ""

    def permalink(self, conversation: str, platform_id: str) -> str | None:
        _, _, channel, thread = conversation.split(":", 3)
        if not self.base or "." not in platform_id:
            return None
        link = f"{self.base}archives/{channel}/p{platform_id.replace('.', '')}"
        if thread and thread != platform_id:
            link += f"?thread_ts={thread}&cid={channel}"
        return link

    def parse(self, url: str) -> tuple[str, str] | None:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        ours = host == (urlsplit(self.base).hostname or "").lower()
        if parts.scheme not in ("http", "https") or not (ours or host.endswith(SLACK_HOSTS)):
            return None
        match = ARCHIVES.fullmatch(parts.path)
        if match is None:
            return None
        channel, digits = match.groups()
        return f"slack:{self.team}:{channel.upper()}:", f"{digits[:-6]}.{digits[-6:]}"
