"""The Web API methods of the fake Slack: chat, streaming, reactions, status, users.

Each handler takes the parsed arguments and returns Slack's JSON body. Errors are
`ApiError(code)`, which the server turns into `{"ok": false, "error": code}` like Slack.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tests.fakes.slack.records import Posted, visible_text

if TYPE_CHECKING:
    from tests.fakes.slack.server import FakeSlack

MARKDOWN_BLOCKS_MAX = 12_000


class ApiError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


Handler = Callable[["FakeSlack", dict[str, Any]], Awaitable[dict[str, Any]]]


def _require(args: dict[str, Any], *names: str) -> None:
    for name in names:
        if not args.get(name):
            raise ApiError(f"missing_argument:{name}" if name != "channel" else "channel_not_found")


def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks") or []
    return list(json.loads(blocks) if isinstance(blocks, str) else blocks)


def _content(args: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    blocks = _blocks(args)
    text = str(args.get("markdown_text") or args.get("text") or "")
    if not text and not blocks:
        raise ApiError("no_text")
    markdown = sum(len(str(b.get("text", ""))) for b in blocks if b.get("type") == "markdown")
    if markdown > MARKDOWN_BLOCKS_MAX or len(blocks) > 50:
        raise ApiError("invalid_blocks")
    return text, blocks


def _check_length(fake: FakeSlack, text: str, blocks: list[dict[str, Any]], limit: int) -> None:
    if max(len(text), len(visible_text(text, blocks))) > limit:
        raise ApiError("msg_too_long")


def _stream_text(args: dict[str, Any]) -> str:
    parts = [str(args.get("markdown_text") or "")]
    for chunk in args.get("chunks") or []:
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            parts.append(str(chunk.get("text", "")))
    return "".join(parts)


async def auth_test(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "ok": True,
        "url": "https://fake.slack.test/",
        "team": "Fake Team",
        "user": "teambot",
        "team_id": fake.team_id,
        "user_id": fake.bot_user_id,
        "bot_id": fake.bot_id,
        "is_enterprise_install": False,
    }


async def post_message(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel")
    channel = fake.channel(str(args["channel"]))
    text, blocks = _content(args)
    _check_length(fake, text, blocks, fake.max_post_chars)
    thread_ts = args.get("thread_ts") or None
    if thread_ts and (channel, thread_ts) not in fake.messages:
        raise ApiError("thread_not_found")
    posted = fake.add_bot_message(channel, text, blocks, thread_ts)
    return {"ok": True, "channel": channel, "ts": posted.ts, "message": fake.message_json(posted)}


def _own(fake: FakeSlack, args: dict[str, Any]) -> Posted:
    _require(args, "channel", "ts")
    found = fake.messages.get((str(args["channel"]), str(args["ts"])))
    if found is None or found.deleted:
        raise ApiError("message_not_found")
    if not found.is_bot:
        raise ApiError("cant_update_message")
    return found


async def update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    posted = _own(fake, args)
    if posted.streaming and not fake.expire_streams:
        raise ApiError("streaming_state_conflict")  # a live stream is locked until stopped
    text, blocks = _content(args)
    _check_length(fake, text, blocks, fake.max_update_chars)
    posted.text, posted.blocks, posted.streaming = text, blocks, False
    posted.updates.append((time.monotonic(), posted.visible))
    fake.check_pings(posted.visible, posted.text)
    fake.echo_changed(posted)
    return {"ok": True, "channel": posted.channel, "ts": posted.ts, "text": text}


async def delete(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    posted = _own(fake, args)
    posted.deleted = True
    return {"ok": True, "channel": posted.channel, "ts": posted.ts}


async def post_ephemeral(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel", "user")
    text, blocks = _content(args)
    fake.ephemerals.append({"channel": args["channel"], "user": args["user"], "text": text})
    fake.check_pings(visible_text(text, blocks), text)
    return {"ok": True, "message_ts": fake.new_ts()}


async def reaction(fake: FakeSlack, args: dict[str, Any], added: bool) -> dict[str, Any]:
    _require(args, "channel", "timestamp", "name")
    key = (str(args["channel"]), str(args["timestamp"]))
    if key not in fake.messages:
        raise ApiError("message_not_found")
    names = fake.reactions.setdefault(key, set())
    if added and args["name"] in names:
        raise ApiError("already_reacted")
    if not added and args["name"] not in names:
        raise ApiError("no_reaction")
    (names.add if added else names.discard)(str(args["name"]))
    fake.reaction_log.append((time.monotonic(), key, str(args["name"]), added))
    return {"ok": True}


async def reactions_add(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return await reaction(fake, args, True)


async def reactions_remove(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return await reaction(fake, args, False)


async def set_status(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    if not fake.status_enabled:
        raise ApiError("missing_scope")
    _require(args, "channel_id", "thread_ts")
    key = (str(args["channel_id"]), str(args["thread_ts"]))
    if key not in fake.messages:
        raise ApiError("invalid_thread_ts")
    from tests.fakes.slack.surfaces import check_loading

    check_loading(fake, args)
    fake.statuses.append((time.monotonic(), key, str(args.get("status", ""))))
    fake.status[key] = str(args.get("status", ""))
    return {"ok": True}


def _stream_mode(args: dict[str, Any]) -> str | None:
    """ "markdown_text" or "chunks" (None for neither); both in one call is refused."""
    text, chunks = bool(args.get("markdown_text")), bool(args.get("chunks"))
    if text and chunks:
        raise ApiError("cannot_provide_both_markdown_text_and_chunks")
    return "markdown_text" if text else "chunks" if chunks else None


async def start_stream(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    if not fake.streaming_enabled:
        raise ApiError("feature_not_enabled")
    _require(args, "channel", "thread_ts")
    channel = fake.channel(str(args["channel"]))
    if (channel, args["thread_ts"]) not in fake.messages:
        raise ApiError("invalid_thread_ts")
    if fake.channels[channel] != "im":  # "Required when streaming to channels"
        for name in ("recipient_user_id", "recipient_team_id"):
            if not args.get(name):
                raise ApiError(f"missing_{name}")
    mode = _stream_mode(args)
    text = _stream_text(args)
    posted = fake.add_bot_message(channel, text, [], str(args["thread_ts"]))
    posted.streaming = posted.streamed = True
    posted.stream_mode = mode
    posted.recipient = str(args.get("recipient_user_id") or "")
    return {"ok": True, "channel": channel, "ts": posted.ts}


def _streaming(fake: FakeSlack, args: dict[str, Any]) -> Posted:
    posted = _own(fake, args)
    if posted.stopped_by_user:
        raise ApiError("stopped_by_user")
    if not posted.streaming or fake.expire_streams:
        raise ApiError("message_not_in_streaming_state")
    mode = _stream_mode(args)
    if mode is not None:
        if posted.stream_mode not in (None, mode):  # fixed by the stream's first content
            raise ApiError("streaming_mode_mismatch")
        posted.stream_mode = mode
    return posted


async def append_stream(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    posted = _streaming(fake, args)
    posted.text += _stream_text(args)
    posted.updates.append((time.monotonic(), posted.visible))
    fake.check_pings(posted.visible, posted.text)
    return {"ok": True, "channel": posted.channel, "ts": posted.ts}


async def stop_stream(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    posted = _streaming(fake, args)
    extra = _stream_text(args)
    blocks = _blocks(args)
    if len(blocks) > 50:
        raise ApiError("msg_blocks_too_many")
    posted.streaming = False
    posted.blocks = posted.blocks + blocks if blocks else posted.blocks
    if extra or blocks:
        posted.text += extra
        posted.updates.append((time.monotonic(), posted.visible))
        fake.check_pings(posted.visible, posted.text)
    return {"ok": True, "channel": posted.channel, "ts": posted.ts}


async def users_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    user = str(args.get("user", ""))
    if user not in fake.users:
        raise ApiError("user_not_found")
    name = fake.users[user]
    profile = {"display_name": name, "real_name": f"{name} Example"}
    owner = user in fake.owners
    return {
        "ok": True,
        "user": {
            "id": user,
            "team_id": fake.team_id,
            "name": name.lower(),
            "real_name": profile["real_name"],
            "profile": profile,
            "is_bot": False,
            "is_admin": owner or user in fake.admins,  # Slack marks owners admins too
            "is_owner": owner,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
        },
    }


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


async def usergroups_list(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    """The workspace's user groups; members only with `include_users`, disabled groups
    only with `include_disabled`, as Slack answers."""
    groups = []
    for group in fake.usergroups.values():
        if group["date_delete"] and not _truthy(args.get("include_disabled")):
            continue
        shown = {k: v for k, v in group.items() if k != "users"}
        shown["user_count"] = len(group["users"])
        if _truthy(args.get("include_users")):
            shown["users"] = list(group["users"])
        groups.append(shown)
    return {"ok": True, "usergroups": groups}


async def conversations_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel = fake.channel(str(args.get("channel", "")))
    kind = fake.channels[channel]
    return {
        "ok": True,
        "channel": {
            "id": channel,
            "name": channel.lower(),
            "is_im": kind == "im",
            "is_channel": kind == "channel",
            "is_private": kind != "channel",
        },
    }


async def files_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    found = fake.file_objects.get(str(args.get("file", "")))
    if found is None:
        raise ApiError("file_not_found")
    return {"ok": True, "file": found}


async def connections_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    fake.ticket += 1
    return {"ok": True, "url": f"{fake.ws_url}?ticket={fake.ticket}"}


METHODS: dict[str, Handler] = {
    "auth.test": auth_test,
    "chat.postMessage": post_message,
    "chat.update": update,
    "chat.delete": delete,
    "chat.postEphemeral": post_ephemeral,
    "reactions.add": reactions_add,
    "reactions.remove": reactions_remove,
    "assistant.threads.setStatus": set_status,
    "chat.startStream": start_stream,
    "chat.appendStream": append_stream,
    "chat.stopStream": stop_stream,
    "users.info": users_info,
    "usergroups.list": usergroups_list,
    "conversations.info": conversations_info,
    "files.info": files_info,
    "apps.connections.open": connections_open,
}
