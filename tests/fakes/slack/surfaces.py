"""The fake Slack's AI and app surfaces: agent threads, App Home, modals, button clicks.

Web API handlers (views.open / views.publish, assistant.threads.setSuggestedPrompts /
setTitle) record what the app asked for; the `Surfaces` mixin delivers the events and
interaction payloads Slack sends (shapes from docs.slack.dev: app_home_opened,
assistant_thread_started, app_context_changed, block_actions, view_submission).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.slack.delivery import form_body
from tests.fakes.slack.webapi import ApiError

if TYPE_CHECKING:
    from tests.fakes.slack.server import FakeSlack

PROMPTS_MAX = 4
LOADING_MAX = 10
TITLE_MAX = 255  # (undocumented; generous)


@dataclass
class View:
    """A view the app opened (modal) or published (home)."""

    id: str
    kind: str
    view: dict[str, Any]
    user: str = ""
    trigger_id: str = ""


@dataclass
class AgentState:
    prompts: list[dict[str, Any]] = field(default_factory=list)  # setSuggestedPrompts calls
    titles: dict[tuple[str, str], str] = field(default_factory=dict)
    loading: list[tuple[tuple[str, str], list[str]]] = field(default_factory=list)


def _view(args: dict[str, Any]) -> dict[str, Any]:
    view = args.get("view") or {}
    return dict(json.loads(view) if isinstance(view, str) else view)


def _list(value: Any) -> list[Any]:
    return list(json.loads(value) if isinstance(value, str) else value or [])


async def views_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    trigger = str(args.get("trigger_id") or "")
    if trigger not in fake.triggers:
        raise ApiError("invalid_trigger_id")  # unknown, used, or older than 3 s
    user = fake.triggers.pop(trigger)
    view = _view(args)
    if view.get("type") != "modal" or len(str(view.get("private_metadata", ""))) > 3000:
        raise ApiError("invalid_arguments")
    if len(view.get("blocks") or []) > 100:
        raise ApiError("invalid_arguments")
    opened = View(f"V{fake.next_id()}", "modal", view, user, trigger)
    fake.views.append(opened)
    return {"ok": True, "view": {"id": opened.id, **view}}


async def views_publish(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    user = str(args.get("user_id") or "")
    if user not in fake.users:
        raise ApiError("user_not_found")
    view = _view(args)
    if view.get("type") != "home" or len(view.get("blocks") or []) > 100:
        raise ApiError("invalid_arguments")
    if not fake.home_enabled:
        raise ApiError("not_enabled")
    published = View(f"V{fake.next_id()}", "home", view, user)
    fake.views.append(published)
    return {"ok": True, "view": {"id": published.id, **view}}


async def set_suggested_prompts(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel = str(args.get("channel_id") or "")
    if fake.channels.get(channel) != "im":
        raise ApiError("channel_not_found")
    prompts = _list(args.get("prompts"))
    if not prompts or len(prompts) > PROMPTS_MAX:
        raise ApiError("invalid_arguments")
    if any(not p.get("title") or not p.get("message") for p in prompts):
        raise ApiError("invalid_arguments")
    thread = args.get("thread_ts")
    if thread and (channel, str(thread)) not in fake.messages:
        raise ApiError("invalid_thread_ts")
    fake.agent.prompts.append(
        {"channel": channel, "thread_ts": thread, "prompts": prompts, "title": args.get("title")}
    )
    return {"ok": True}


async def set_title(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel, thread = str(args.get("channel_id") or ""), str(args.get("thread_ts") or "")
    title = str(args.get("title") or "")
    if not channel or not thread or not title:
        raise ApiError("invalid_arguments")
    if (channel, thread) not in fake.messages:
        raise ApiError("invalid_thread_ts")
    if len(title) > TITLE_MAX:
        raise ApiError("invalid_arguments")
    fake.agent.titles[(channel, thread)] = title
    return {"ok": True}


def check_loading(fake: FakeSlack, args: dict[str, Any]) -> None:
    """setStatus's `loading_messages`: at most 10, recorded."""
    loading = _list(args.get("loading_messages"))
    if len(loading) > LOADING_MAX:
        raise ApiError("invalid_arguments")
    if loading:
        key = (str(args.get("channel_id")), str(args.get("thread_ts")))
        fake.agent.loading.append((key, [str(x) for x in loading]))


METHODS = {
    "views.open": views_open,
    "views.publish": views_publish,
    "assistant.threads.setSuggestedPrompts": set_suggested_prompts,
    "assistant.threads.setTitle": set_title,
}


class Surfaces:
    """What people do on the app's own surfaces, delivered as Slack delivers it."""

    def _interactive(self: FakeSlack, payload: dict[str, Any], rid: str) -> str:  # type: ignore[misc]
        if self.mode == "socket":
            return self.hub.send("interactive", payload)
        fields = {"payload": json.dumps(payload)}
        self._spawn(self._post_http(form_body(fields), "application/x-www-form-urlencoded", rid))
        return rid

    def _user(self: FakeSlack, user: str) -> dict[str, Any]:  # type: ignore[misc]
        name = self.users.get(user, user).lower()
        return {"id": user, "username": name, "name": name, "team_id": self.team_id}

    def open_home(self: FakeSlack, user: str, tab: str = "home") -> str:  # type: ignore[misc]
        """`user` opens the app's Home ("home") or Messages ("messages") tab."""
        channel = self.app_channel(user)
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": channel,
            "tab": tab,
            "event_ts": self.new_ts(),
        }
        published = [v for v in self.views if v.kind == "home" and v.user == user]
        if published:  # Slack includes the view only once one was published
            event["view"] = {"id": published[-1].id, **published[-1].view}
        return self.deliver_event(event)

    def app_channel(self: FakeSlack, user: str) -> str:  # type: ignore[misc]
        """The DM between `user` and the app (its Messages tab)."""
        channel = f"D{user}"
        if channel not in self.channels:
            self.add_channel(channel, "im")
        return channel

    def start_assistant_thread(  # type: ignore[misc]
        self: FakeSlack, user: str, viewing: str | None = None
    ) -> tuple[str, str]:
        """`user` opens a new assistant thread (legacy assistant view) next to channel
        `viewing`; Slack posts the thread's root itself. Returns (channel, thread_ts)."""
        channel = self.app_channel(user)
        root = self.add_bot_message(channel, "Hi, how can I help?", [], None)
        context: dict[str, Any] = {}
        if viewing:
            context = {"channel_id": viewing, "team_id": self.team_id, "enterprise_id": None}
        self.deliver_event(
            {
                "type": "assistant_thread_started",
                "assistant_thread": {
                    "user_id": user,
                    "context": context,
                    "channel_id": channel,
                    "thread_ts": root.ts,
                },
                "event_ts": self.new_ts(),
            }
        )
        return channel, root.ts

    def view_channel(self: FakeSlack, user: str, channel: str) -> str:  # type: ignore[misc]
        """`user` moves to `channel` with the agent open (agent view: app_context_changed)."""
        entities = [{"type": "slack#/types/channel_id", "value": channel, "team_id": self.team_id}]
        return self.deliver_event(
            {
                "type": "app_context_changed",
                "user": user,
                "channel": self.app_channel(user),
                "context": {"entities": entities},
                "event_ts": self.new_ts(),
            }
        )

    def stop_stream_as_user(self: FakeSlack, channel: str, ts: str) -> None:  # type: ignore[misc]
        """The recipient stops a live stream in Slack's UI: the stream ends there, and the
        app's next append or stop gets `stopped_by_user`."""
        posted = self.messages[(channel, ts)]
        posted.streaming, posted.stopped_by_user = False, True

    def click(  # type: ignore[misc]
        self: FakeSlack, user: str, channel: str, ts: str, action_id: str, value: str = ""
    ) -> str:
        """`user` clicks the button (or feedback button) `action_id` on message `ts`;
        `value` picks the feedback button ("up"/"down") or overrides the button's value."""
        posted = self.messages[(channel, ts)]
        element = self._element(posted.blocks, action_id)
        if element is None:
            raise AssertionError(f"no {action_id} on {ts}: {posted.blocks}")
        kind = str(element.get("type"))
        if kind == "feedback_buttons":
            side = "positive_button" if value in ("", "up") else "negative_button"
            value = str(element[side]["value"])
        rid = f"R{self.next_id()}"
        self.triggers[f"T.{rid}"] = user
        action = {
            "type": kind,
            "action_id": action_id,
            "block_id": "b1",
            "value": value or str(element.get("value", "")),
            "action_ts": self.new_ts(),
        }
        message = self.message_json(posted)
        payload = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": "A0FAKE",
            "token": "fake-verification-token",
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
                "thread_ts": posted.thread_ts,
            },
            "trigger_id": f"T.{rid}",
            "team": {"id": self.team_id, "domain": "fake"},
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "message": message,
            "response_url": f"http://127.0.0.1:{self.port}/respond/{rid}",
            "actions": [action],
        }
        return self._interactive(payload, rid)

    @staticmethod
    def _element(blocks: list[dict[str, Any]], action_id: str) -> dict[str, Any] | None:
        for block in blocks:
            for element in block.get("elements") or ():
                if element.get("action_id") == action_id:
                    return dict(element)
        return None

    def submit(self: FakeSlack, view_id: str, values: dict[str, dict[str, str]]) -> str:  # type: ignore[misc]
        """The person submits modal `view_id` with `values` ({block_id: {action_id: text}})."""
        opened = next(v for v in self.views if v.id == view_id)
        state = {
            block: {
                action: {"type": "plain_text_input", "value": text}
                for action, text in inner.items()
            }
            for block, inner in values.items()
        }
        rid = f"R{self.next_id()}"
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "fake"},
            "user": self._user(opened.user),
            "api_app_id": "A0FAKE",
            "token": "fake-verification-token",
            "trigger_id": f"T.{rid}",
            "view": {
                "id": opened.id,
                "team_id": self.team_id,
                "type": "modal",
                "callback_id": opened.view.get("callback_id"),
                "private_metadata": opened.view.get("private_metadata", ""),
                "blocks": opened.view.get("blocks", []),
                "state": {"values": state},
                "hash": "fake-hash",
                "app_id": "A0FAKE",
                "bot_id": self.bot_id,
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }
        return self._interactive(payload, rid)
