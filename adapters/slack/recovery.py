"""Marking Slack replies a crash cut short (bot/journal.py): refs are message ts."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from adapters.slack.api import SlackApi
from bot.journal import with_note
from bot.store import Orphan

# A Slack message's text limit (chat.update refuses longer as msg_too_long).
LIMIT = 4000


class SlackRecoverer:
    def __init__(self, api: SlackApi) -> None:
        self.api = api

    async def cut_off(self, orphan: Orphan, note: str) -> str:
        channel = orphan.conversation.split(":")[2]
        ts, shown = orphan.refs[-1], orphan.shown[-1]
        try:
            await self.api.update(channel, ts, with_note(shown, note, LIMIT))
        except SlackApiError:
            # A native stream left open by the dead process takes no updates until it is
            # stopped; stopping it with the note keeps all it showed.
            await self.api.stop_stream(channel, ts, f"\n\n{note}")
        return shown
