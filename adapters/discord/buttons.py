"""The buttons under an answer: Stop while it is written, Regenerate and 👍/👎 after.

Each button's custom id carries only the action and the stored question's row id
(`tb:stop:42`), so a click works in any process and after a restart: the client's
interaction handler reads the id back (adapters/discord/clicks.py). No discord.py view
is kept per message for that.
"""

from __future__ import annotations

import re

import discord

from bot.delivery import Controls

PREFIX = "tb:"
STOP, REGENERATE, UP, DOWN = "stop", "regen", "up", "down"
_CUSTOM_ID = re.compile(r"tb:(stop|regen|up|down):(\d+)")


def custom_id(action: str, question: int) -> str:
    return f"{PREFIX}{action}:{question}"


def parse(custom: str) -> tuple[str, int] | None:
    """(action, question) of one of our buttons' custom ids, None for anything else."""
    match = _CUSTOM_ID.fullmatch(custom)
    return (match.group(1), int(match.group(2))) if match else None


class Buttons(discord.ui.View):
    """One row of buttons; clicks are handled by custom id, never through this view."""

    def __init__(self, controls: Controls) -> None:
        super().__init__(timeout=None)
        question = controls.question
        if controls.stop:
            self._add(STOP, question, "Stop", discord.ButtonStyle.danger, "⏹️")
        if controls.regenerate:
            self._add(REGENERATE, question, "Regenerate", discord.ButtonStyle.secondary, "🔄")
        if controls.feedback:
            self._add(UP, question, None, discord.ButtonStyle.secondary, "👍")
            self._add(DOWN, question, None, discord.ButtonStyle.secondary, "👎")

    def _add(
        self, action: str, question: int, label: str | None, style: discord.ButtonStyle, emoji: str
    ) -> None:
        button: discord.ui.Button[Buttons] = discord.ui.Button(
            label=label, style=style, emoji=emoji, custom_id=custom_id(action, question)
        )
        self.add_item(button)

    def is_dispatchable(self) -> bool:
        # discord.py would otherwise keep this view in memory for every message sent with
        # it; the client handles our custom ids itself, in any process, after restarts.
        return False


def view_for(controls: Controls | None) -> Buttons | None:
    """The buttons for `controls`, or None (which, on an edit, takes them off)."""
    if controls is None or not (controls.stop or controls.regenerate or controls.feedback):
        return None
    return Buttons(controls)
