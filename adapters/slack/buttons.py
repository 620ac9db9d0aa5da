"""A reply's buttons as Block Kit: Stop while it is written, then Regenerate and feedback.

Each button carries only the stored question's id (`Controls.question`), so a click
works in any process and after a restart. Feedback uses Slack's own `feedback_buttons`
element (a 👍/👎 toggle in a `context_actions` block); Stop and Regenerate are ordinary
buttons in an `actions` block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.delivery import Controls

STOP, REGENERATE, FEEDBACK = "teambot_stop", "teambot_regenerate", "teambot_feedback"
ACTIONS = (STOP, REGENERATE, FEEDBACK)
UP, DOWN = "up", "down"


def _button(action_id: str, label: str, question: int, style: str = "") -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": str(question),
    }
    if style:
        button["style"] = style
    return button


def _vote(label: str, value: str, question: int, accessible: str) -> dict[str, Any]:
    return {
        "text": {"type": "plain_text", "text": label},
        "value": f"{value}:{question}",
        "accessibility_label": accessible,
    }


def blocks(controls: Controls | None) -> list[dict[str, Any]]:
    """The blocks that show `controls` under a message (none for None)."""
    if controls is None or not controls.question:
        return []
    q = controls.question
    found: list[dict[str, Any]] = []
    buttons = []
    if controls.stop:
        buttons.append(_button(STOP, "■ Stop", q, "danger"))
    if controls.regenerate:
        buttons.append(_button(REGENERATE, "↻ Regenerate", q))
    if buttons:
        found.append({"type": "actions", "elements": buttons})
    if controls.feedback:
        feedback = {
            "type": "feedback_buttons",
            "action_id": FEEDBACK,
            "positive_button": _vote("👍", UP, q, "Good answer"),
            "negative_button": _vote("👎", DOWN, q, "Bad answer"),
        }
        found.append({"type": "context_actions", "elements": [feedback]})
    return found


@dataclass(frozen=True)
class Click:
    """One button click (a `block_actions` payload), as the handlers need it."""

    action: str  # one of ACTIONS
    question: int
    vote: int  # +1 / -1 for feedback, else 0
    user: str
    team: str
    channel: str
    message_ts: str
    thread_ts: str


def click(body: dict[str, Any]) -> Click | None:
    """The click `body` reports, or None when it is not one of ours or is malformed."""
    actions = body.get("actions") or []
    if not actions:
        return None
    action = actions[0]
    action_id = str(action.get("action_id") or "")
    value = str(action.get("value") or "")
    vote = 0
    if action_id == FEEDBACK:
        kind, _, value = value.partition(":")
        vote = {UP: 1, DOWN: -1}.get(kind, 0)
        if not vote:
            return None
    if action_id not in ACTIONS or not value.isdigit():
        return None
    message = body.get("message") or {}
    container = body.get("container") or {}
    ts = str(message.get("ts") or container.get("message_ts") or "")
    return Click(
        action=action_id,
        question=int(value),
        vote=vote,
        user=str((body.get("user") or {}).get("id") or ""),
        team=str(
            (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or ""
        ),
        channel=str((body.get("channel") or {}).get("id") or container.get("channel_id") or ""),
        message_ts=ts,
        thread_ts=str(message.get("thread_ts") or container.get("thread_ts") or ts),
    )
