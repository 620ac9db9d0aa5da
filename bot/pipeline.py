"""The pipeline of one reply: prompt, stream, outcome.

`ReplyPipeline.run` is called by the engine once the conversation's turn has come. It
builds the prompt from the stored window, streams the model's answer out as reply
events, then stores the answer and its usage and emits exactly one `ReplyDone` or
`ReplyFailed`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot import context, tokens
from bot.accounting import Accounts
from bot.config import Settings
from bot.errors import ContextTooLong, ModelError
from bot.model import AnswerChunk, Finished, ModelClient, ModelRequest, ThinkingChunk
from bot.store import NewMessage, Store, StoredMessage
from bot.types import (
    ConversationKey,
    ConversationSettings,
    Message,
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
    Started,
    TextDelta,
    ThinkingDelta,
    Usage,
)
from bot.window import Window, Windows

log = logging.getLogger("teambot.engine")

CUT_BY_SHUTDOWN = "(The bot restarted mid-answer, so this reply is incomplete.)"

Emit = Callable[[ReplyEvent], None]
STARTED = Started()
Prepared = tuple[Window, ConversationSettings]  # a turn's window and settings, already read


@functools.lru_cache(maxsize=64)
def _count_cached(text: str) -> int:
    """System prompts repeat every turn; count each distinct one once."""
    return tokens.count(text)


@dataclass
class Outcome:
    """How one model call ended."""

    answer: str = ""
    thinking: str = ""
    usage: Usage | None = None
    error: ModelError | None = None
    cancelled: bool = False
    estimate: int = 0  # our count of the prompt's tokens

    @property
    def state(self) -> str:
        """What the usage table says of it: "ok", "cut_off" or the error's class name."""
        if self.cancelled:
            return "cut_off"
        return type(self.error).__name__ if self.error else "ok"


@dataclass(frozen=True)
class Turn:
    """Everything one reply is built from."""

    message: Message
    row: StoredMessage  # the question as stored
    window: Window
    settings: ConversationSettings
    reasoning: bool


class ReplyPipeline:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        model: ModelClient,
        accounts: Accounts,
        conversation_settings: Callable[[ConversationKey], Awaitable[ConversationSettings]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.accounts = accounts
        self.conversation_settings = conversation_settings
        self.windows = Windows(store)

    async def run(
        self,
        message: Message,
        row: StoredMessage,
        reasoning: bool | None,
        emit: Emit,
        ready: Prepared | None = None,
    ) -> None:
        """Answer `message` (stored as `row`) and emit its events, ending with Done or Failed.

        `ready` is the conversation's window and settings when the engine read them with the
        question; otherwise both are read now, in one store round trip.
        """
        window, settings = ready or await self.read(message)
        if reasoning is None:
            reasoning = (
                self.settings.reasoning
                if settings.reasoning is None
                else (settings.reasoning != "off")
            )
        started = time.perf_counter()
        turn = Turn(message, row, window, settings, reasoning)
        outcome = await self._answer(turn, emit)
        await self._finish(turn, outcome, started, emit)

    async def read(self, message: Message) -> Prepared:
        """The conversation's window and settings, read together (one store round trip)."""
        window, settings = await asyncio.gather(
            self.windows.get(message.key, message.is_group),
            self.conversation_settings(message.key),
        )
        return window, settings

    async def _answer(self, turn: Turn, emit: Emit) -> Outcome:
        """Stream the answer; a prompt the API finds too long is trimmed harder once."""
        budget = self.accounts.budget(self.settings.context_tokens)
        outcome = Outcome()
        for _ in range(2):
            try:
                request, estimate = await self._request(turn, budget)
            except ContextTooLong as exc:
                return Outcome(error=exc, estimate=outcome.estimate)
            outcome = await self._stream(request, emit)
            outcome.estimate = estimate
            if not (isinstance(outcome.error, ContextTooLong) and not outcome.answer):
                break
            log.warning(
                "context too long for %s; trimming harder and retrying once", turn.message.key
            )
            budget = estimate // 2
        return outcome

    async def _request(self, turn: Turn, budget: int) -> tuple[ModelRequest, int]:
        message, row, window = turn.message, turn.row, turn.window
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        system = context.system_message(
            self.settings.system_prompt, turn.settings.system or "", today
        )
        fixed = _count_cached(system["content"]) + tokens.IMAGE_TOKENS * len(message.images)
        # Questions queued behind this one are in the window too; they wait their turn.
        cut = window.upto(row.position)
        total = fixed + window.tokens - sum(m.tokens for m in window.rows[cut:])
        new_start = context.trim_window(window.rows[:cut], total, budget)
        if new_start is not None:
            window.trim(new_start)
            await self.store.set_window_start(str(message.key), new_start)
            cut = window.upto(row.position)
            total = fixed + window.tokens - sum(m.tokens for m in window.rows[cut:])
        if total > budget:
            raise ContextTooLong(f"message alone is ~{total} tokens; budget {budget}")
        messages = context.build_messages(system, window.merged(cut), images=message.images)
        return ModelRequest(messages, turn.reasoning, self.settings.max_output_tokens), total

    async def _stream(self, request: ModelRequest, emit: Emit) -> Outcome:
        outcome = Outcome()
        answer: list[str] = []
        thinking: list[str] = []
        emit(STARTED)
        try:
            async for event in self.model.stream(request):
                if isinstance(event, AnswerChunk):
                    answer.append(event.text)
                    emit(TextDelta(event.text))
                elif isinstance(event, ThinkingChunk):
                    thinking.append(event.text)
                    emit(ThinkingDelta(event.text))
                elif isinstance(event, Finished):
                    outcome.usage = event.usage
        except ModelError as exc:
            outcome.error = exc
        except asyncio.CancelledError:
            outcome.cancelled = True
        outcome.answer = "".join(answer)
        outcome.thinking = "".join(thinking)
        return outcome

    async def _finish(self, turn: Turn, outcome: Outcome, started: float, emit: Emit) -> None:
        """Store the answer and its usage together, then say how the reply ended."""
        message = turn.message
        answer_tokens = await tokens.count_async(outcome.answer) if outcome.answer else 0
        # Without the API's usage (a broken or cut stream), bill what was surely spent.
        usage = outcome.usage or Usage(outcome.estimate if outcome.answer else 0, answer_tokens)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            "%s in %s: %d+%d tokens, %.0f ms",
            outcome.state,
            message.key,
            usage.prompt_tokens,
            usage.completion_tokens,
            elapsed_ms,
        )
        record = self.accounts.usage_record(
            message.key, message.author.id, usage, elapsed_ms, outcome.state
        )
        writes: list[Awaitable[object]] = [self.store.record_usage(record)]
        failed = outcome.error if not outcome.answer else None
        if failed is None:
            writes.append(
                self.store.add_message(_answer_row(message, turn.row, outcome, answer_tokens))
            )
        await asyncio.gather(*writes)  # together: one store round trip
        if failed is not None:
            emit(ReplyFailed(failed.user_message))
            return
        if outcome.usage and not outcome.cancelled:
            await self.accounts.calibrate(outcome.estimate, outcome.usage.prompt_tokens)
        notice = CUT_BY_SHUTDOWN if outcome.cancelled else ""
        if outcome.error:
            notice = f"({outcome.error.user_message})"
        emit(
            ReplyDone(
                text=outcome.answer,
                thinking=outcome.thinking,
                usage=usage,
                cut_off=bool(notice),
                notice=notice,
                show_thinking=turn.settings.reasoning == "show",
            )
        )


def _answer_row(
    message: Message, question: StoredMessage, outcome: Outcome, answer_tokens: int
) -> NewMessage:
    return NewMessage(
        conversation=str(message.key),
        role="assistant",
        author_id="teambot",
        author_name="teambot",
        text=outcome.answer,
        tokens=answer_tokens,
        reply_to=question.id,
        thinking=outcome.thinking,
    )
