"""The conversation engine: decides what the model sees and keeps every reply in order.

Adapters hand it platform-neutral `Message`s. For each message it answers, it
stores the message, waits for the conversation's earlier replies to finish (one
reply in flight per conversation; different conversations run in parallel), builds
the prompt from the stored window, streams the model's answer back as reply events
and stores the reply. The work runs in its own task, so a reply is stored even if
the adapter stops listening half-way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot import commands, context, tokens
from bot.config import Settings
from bot.errors import ContextTooLong, ModelError
from bot.model import AnswerChunk, Finished, ModelClient, ModelRequest, ThinkingChunk
from bot.store import NewMessage, Store, StoredMessage, UsageRecord
from bot.types import (
    Author,
    CommandResult,
    ConversationKey,
    Message,
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
    TextDelta,
    ThinkingDelta,
    Usage,
)
from bot.window import Window

log = logging.getLogger("teambot.engine")

THINK_PREFIX = "think:"
SHUTTING_DOWN = "I'm restarting right now; please ask again in a moment."
BUG = "Something went wrong on my side; the details are in the bot's log."
CUT_BY_SHUTDOWN = "(The bot restarted mid-answer, so this reply is incomplete.)"
# Counting a very long text takes milliseconds; do that off the event loop.
COUNT_IN_THREAD_CHARS = 20_000
CACHED_WINDOWS = 512  # conversations whose window is kept in memory
CALIBRATION_SAVE_EVERY = 50  # turns between writes of the calibration ratio


@functools.lru_cache(maxsize=64)
def _count_cached(text: str) -> int:
    """System prompts repeat every turn; count each distinct one once."""
    return tokens.count(text)


def parse_think(text: str, override: bool | None) -> tuple[str, bool | None]:
    """Strip a leading `think:` and report whether this message asks for reasoning."""
    stripped = text.lstrip()
    if stripped[: len(THINK_PREFIX)].lower() == THINK_PREFIX:
        return stripped[len(THINK_PREFIX) :].lstrip(), True if override is None else override
    return text, override


@dataclass
class _Turn:
    """A FIFO lock for one conversation plus how many replies are waiting on it."""

    lock: asyncio.Lock
    users: int = 0


@dataclass
class _Outcome:
    answer: str = ""
    thinking: str = ""
    usage: Usage | None = None
    error: ModelError | None = None
    cancelled: bool = False


class Engine:
    def __init__(self, settings: Settings, store: Store, model: ModelClient) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.calibration = tokens.Calibration()
        self._turns: dict[str, _Turn] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._windows: OrderedDict[str, Window] = OrderedDict()
        self._settings: dict[str, dict[str, str]] = {}
        self._calibrated_turns = 0

    @classmethod
    async def create(cls, settings: Settings) -> Engine:
        """The production wiring: the configured store, the Mistral client, Tekken loaded."""
        from bot.mistral import MistralClient
        from bot.store import open_store

        store = await open_store(settings.database_url)
        model = MistralClient(
            api_key=settings.mistral_api_key,
            base_url=settings.mistral_base_url,
            model=settings.model,
        )
        await asyncio.to_thread(tokens.load)
        engine = cls(settings, store, model)
        await engine.start()
        return engine

    async def start(self) -> None:
        ratio = await self.store.get_meta("calibration_ratio")
        if ratio:
            self.calibration.ratio = float(ratio)

    # What adapters call

    def is_admin(self, author_id: str) -> bool:
        return author_id in self.settings.admin_ids

    async def claim_event(self, source: str, event_id: str) -> bool:
        return await self.store.claim_event(f"{source}:{event_id}")

    async def record(self, message: Message) -> bool:
        """Store a message as context without answering it."""
        row = await self.store.add_message(await self._new_row(message, message.text))
        return row is not None

    async def edit(self, key: ConversationKey, message_id: str, text: str) -> bool:
        self._windows.pop(str(key), None)
        return await self.store.update_message(str(key), message_id, text, await self._count(text))

    async def delete(self, key: ConversationKey, message_id: str) -> bool:
        self._windows.pop(str(key), None)
        return await self.store.delete_message(str(key), message_id)

    async def has_answered(self, key: ConversationKey) -> bool:
        """Whether the bot has answered in this conversation (ever, not just since start)."""
        return await self.store.answered(str(key))

    async def get_meta(self, name: str) -> str | None:
        """A value an adapter keeps across restarts (e.g. its command-sync fingerprint)."""
        return await self.store.get_meta(name)

    async def set_meta(self, name: str, value: str) -> None:
        await self.store.set_meta(name, value)

    async def forget(self, key: ConversationKey) -> int:
        self._windows.pop(str(key), None)
        return await self.store.forget(str(key))

    async def conversation_settings(self, key: ConversationKey) -> dict[str, str]:
        cached = self._settings.get(str(key))
        if cached is None:
            cached = self._settings[str(key)] = await self.store.settings(str(key))
        return dict(cached)

    async def set_setting(self, key: ConversationKey, name: str, value: str | None) -> None:
        self._settings.pop(str(key), None)
        await self.store.set_setting(str(key), name, value)

    async def seed(self, source: ConversationKey, target: ConversationKey, limit: int = 20) -> int:
        """Start an empty conversation with the newest messages of another one."""
        self._windows.pop(str(target), None)
        return await self.store.seed(str(source), str(target), limit)

    async def command(
        self, key: ConversationKey, author: Author, name: str, args: str, *, is_group: bool = True
    ) -> CommandResult:
        return await commands.run(self, key, author, name, args, is_group=is_group)

    async def reply(self, message: Message) -> AsyncIterator[ReplyEvent]:
        """Answer `message`: text and thinking deltas, then one ReplyDone or ReplyFailed.

        Yields nothing at all for a message that was already answered.
        """
        if self._closing:
            yield ReplyFailed(SHUTTING_DOWN)
            return
        text, reasoning = parse_think(message.text, message.reasoning)
        # One store round trip: claiming the answer and storing the question together.
        row = await self.store.add_question(
            f"answer:{message.key}:{message.id}", await self._new_row(message, text)
        )
        if row is None:
            return
        cached = self._windows.get(str(message.key))
        if cached is not None and row.id <= cached.max_id:
            # It was in the window already, as context; its text may just have changed.
            self._windows.pop(str(message.key))
        queue: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        task = asyncio.create_task(self._answer(message, row, reasoning, queue.put_nowait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        while True:
            event = await queue.get()
            yield event
            if isinstance(event, ReplyDone | ReplyFailed):
                return

    async def shutdown(self, grace: float = 8.0) -> None:
        """Take no new work; give in-flight replies `grace` seconds, then cut and store them."""
        self._closing = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.shutdown(grace=0)
        await self.model.aclose()
        await self.store.aclose()

    # The reply pipeline

    async def _count(self, text: str) -> int:
        if len(text) > COUNT_IN_THREAD_CHARS:
            return await asyncio.to_thread(tokens.count, text)
        return tokens.count(text)

    async def _new_row(self, message: Message, text: str) -> NewMessage:
        return NewMessage(
            conversation=str(message.key),
            role="user",
            author_id=message.author.id,
            author_name=message.author.name,
            text=text,
            tokens=await self._count(text),
            platform_id=message.id,
            attachments=message.attachments,
        )

    def _turn_for(self, key: str) -> _Turn:
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn(asyncio.Lock())
        return turn

    async def _answer(
        self,
        message: Message,
        row: StoredMessage,
        reasoning: bool | None,
        emit: Callable[[ReplyEvent], None],
    ) -> None:
        key = str(message.key)
        turn = self._turn_for(key)
        turn.users += 1
        try:
            async with turn.lock:
                await self._answer_in_turn(message, row, reasoning, emit)
        except asyncio.CancelledError:
            emit(ReplyFailed(SHUTTING_DOWN))  # cancelled while still waiting for its turn
            raise
        except Exception:
            log.exception("reply to %s in %s failed", message.id, key)
            emit(ReplyFailed(BUG))
        finally:
            turn.users -= 1
            if not turn.users:
                self._turns.pop(key, None)

    async def _answer_in_turn(
        self,
        message: Message,
        row: StoredMessage,
        reasoning: bool | None,
        emit: Callable[[ReplyEvent], None],
    ) -> None:
        key = str(message.key)
        # Both reads go to the store together (one round trip for a new conversation).
        settings, window = await asyncio.gather(
            self.conversation_settings(message.key), self._window(key, message.is_group)
        )
        if reasoning is None:
            default = settings.get("reasoning")
            reasoning = self.settings.reasoning if default is None else default != "off"
        started = time.perf_counter()
        outcome = _Outcome()
        estimate = 0
        budget = int(self.settings.context_tokens / self.calibration.ratio)
        for _ in range(2):
            try:
                request, estimate = await self._request(
                    message, row, window, settings, reasoning, budget
                )
            except ContextTooLong as exc:
                outcome = _Outcome(error=exc)
                break
            outcome = await self._stream(request, emit)
            if not (isinstance(outcome.error, ContextTooLong) and not outcome.answer):
                break
            log.warning("context too long for %s; trimming harder and retrying once", key)
            budget = estimate // 2
        await self._finish(message, row, outcome, estimate, started, settings, emit)

    async def _window(self, key: str, named: bool) -> Window:
        window = self._windows.get(key)
        if window is None or window.named != named:
            window = Window(*await self.store.window(key), named)
        else:
            window.add(await self.store.messages_since(key, window.max_id))
        self._windows[key] = window
        self._windows.move_to_end(key)
        while len(self._windows) > CACHED_WINDOWS:
            self._windows.popitem(last=False)
        return window

    async def _request(
        self,
        message: Message,
        row: StoredMessage,
        window: Window,
        settings: dict[str, str],
        reasoning: bool,
        budget: int,
    ) -> tuple[ModelRequest, int]:
        key = str(message.key)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        system = context.system_message(
            self.settings.system_prompt, settings.get("system", ""), today
        )
        fixed = _count_cached(system["content"]) + tokens.IMAGE_TOKENS * len(message.images)
        # Questions queued behind this one are in the window too; they wait their turn.
        cut = window.upto(row.position)
        total = fixed + window.tokens - sum(m.tokens for m in window.rows[cut:])
        new_start = context.trim_window(window.rows[:cut], total, budget)
        if new_start is not None:
            window.trim(new_start)
            await self.store.set_window_start(key, new_start)
            cut = window.upto(row.position)
            total = fixed + window.tokens - sum(m.tokens for m in window.rows[cut:])
        if total > budget:
            raise ContextTooLong(f"message alone is ~{total} tokens; budget {budget}")
        messages = context.build_messages(system, window.merged(cut), images=message.images)
        return ModelRequest(messages, reasoning, self.settings.max_output_tokens), total

    async def _stream(self, request: ModelRequest, emit: Callable[[ReplyEvent], None]) -> _Outcome:
        outcome = _Outcome()
        answer: list[str] = []
        thinking: list[str] = []
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

    async def _finish(
        self,
        message: Message,
        row: StoredMessage,
        outcome: _Outcome,
        estimate: int,
        started: float,
        settings: dict[str, str],
        emit: Callable[[ReplyEvent], None],
    ) -> None:
        key = str(message.key)
        answer_tokens = await self._count(outcome.answer) if outcome.answer else 0
        # Without the API's usage (a broken or cut stream), bill what was surely spent.
        usage = outcome.usage or Usage(estimate if outcome.answer else 0, answer_tokens)
        state = (
            "cut_off"
            if outcome.cancelled
            else type(outcome.error).__name__
            if outcome.error
            else "ok"
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            "%s in %s: %d+%d tokens, %.0f ms",
            state,
            key,
            usage.prompt_tokens,
            usage.completion_tokens,
            elapsed_ms,
        )
        writes: list[Awaitable[object]] = [
            self.store.record_usage(
                UsageRecord(
                    platform=message.key.platform,
                    conversation=key,
                    user_id=message.author.id,
                    model=self.model.model,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cost_usd=usage.cost_usd,
                    latency_ms=elapsed_ms,
                    outcome=state,
                )
            )
        ]
        failed = outcome.error if not outcome.answer else None
        if failed is None:
            writes.append(
                self.store.add_message(
                    NewMessage(
                        conversation=key,
                        role="assistant",
                        author_id="teambot",
                        author_name="teambot",
                        text=outcome.answer,
                        tokens=answer_tokens,
                        reply_to=row.id,
                        thinking=outcome.thinking,
                    )
                )
            )
        await asyncio.gather(*writes)  # together: one store round trip
        if failed is not None:
            emit(ReplyFailed(failed.user_message))
            return
        if outcome.usage and not outcome.cancelled:
            await self._calibrate(estimate, outcome.usage.prompt_tokens)
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
                show_thinking=settings.get("reasoning") == "show",
            )
        )

    async def _calibrate(self, estimate: int, reported: int) -> None:
        self.calibration.observe(estimate, reported)
        self._calibrated_turns += 1
        if self._calibrated_turns % CALIBRATION_SAVE_EVERY == 1:
            await self.store.set_meta("calibration_ratio", f"{self.calibration.ratio:.4f}")
