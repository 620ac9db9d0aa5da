"""Turn the engine's reply events into a streamed Discord answer."""

from __future__ import annotations

import logging

from adapters.discord.pacer import Pacer
from adapters.discord.streaming import Attachment, Target
from bot.engine import Engine
from bot.types import Message, ReplyDone, ReplyFailed, TextDelta

log = logging.getLogger(__name__)

EMPTY_ANSWER = "(The model returned an empty answer.)"
BROKEN = "Something went wrong on my side; the details are in the bot's log."


def notes_block(notes: list[str]) -> str:
    """Attachment notes shown above the answer as Discord small text."""
    return "".join(f"-# {note}\n" for note in notes)


def final_text(done: ReplyDone) -> str:
    text = done.text.strip() or ("" if done.notice else EMPTY_ANSWER)
    if done.notice:
        text = f"{text}\n\n*{done.notice}*" if text else done.notice
    return text


def thinking_file(done: ReplyDone) -> list[Attachment]:
    if not (done.show_thinking and done.thinking.strip()):
        return []
    return [Attachment("thinking.md", done.thinking.encode("utf-8"))]


async def answer(
    engine: Engine, pacer: Pacer, target: Target, message: Message, notes: list[str]
) -> None:
    """Stream the engine's answer to `message` into `target` and wait until it is shown."""
    stream = pacer.open(target, prefix=notes_block(notes))
    finished = False
    try:
        async for event in engine.reply(message):
            if isinstance(event, TextDelta):
                stream.append(event.text)
            elif isinstance(event, ReplyDone):
                stream.finish(final_text(event), thinking_file(event))
                finished = True
            elif isinstance(event, ReplyFailed):
                # The one-sentence notice replaces whatever partial text was shown.
                stream.finish(event.notice)
                finished = True
    except Exception:
        log.exception("answering %s in %s failed", message.id, message.key)
        stream.finish(BROKEN)
        finished = True
    if not finished:
        # Already answered before (a redelivered event): nothing to show.
        stream.abandon()
        return
    await stream.wait()
