"""The pipeline of one reply: prompt, stream, outcome.

`ReplyPipeline.run` is called by the engine once the conversation's turn has come. It
builds the prompt from the stored window, streams the model's answer out as reply
events, then stores the answer and its usage and emits exactly one `ReplyDone` or
`ReplyFailed`.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot import context, logs, metrics, tokens
from bot.accounting import Accounts
from bot.attachments import Readers
from bot.config import Settings
from bot.control import Replies, stopped_notice
from bot.errors import ContextTooLong, ModelError, SpendLimitReached
from bot.limits import Grant, Limits
from bot.memory import Memory, Remembering
from bot.model import (
    AnswerChunk,
    Finished,
    ModelClient,
    ModelRequest,
    ThinkingChunk,
    ToolCall,
    ToolCalls,
    prompt_cache_key,
)
from bot.store import NewMessage, Store, StoredMessage
from bot.tools import Links, Tool, ToolContext, rounds, scope_of
from bot.tools.loop import LIMIT_NOTE, Toolbox, activity, run_round
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
    ToolActivity,
    Usage,
)
from bot.window import Window, Windows

log = logging.getLogger("teambot.engine")

CUT_BY_SHUTDOWN = "(The bot restarted mid-answer, so this reply is incomplete.)"
KEPT = "No new text came, so the previous answer stays."

Emit = Callable[[ReplyEvent], None]
STARTED = Started()
Prepared = tuple[Window, ConversationSettings]  # a turn's window and settings, already read


@functools.lru_cache(maxsize=64)
def _count_cached(text: str) -> int:
    """System prompts repeat every turn; count each distinct one once."""
    return tokens.count(text)


@dataclass
class Outcome:
    """How a reply's model calls ended (the last call's, plus its tool rounds)."""

    answer: str = ""
    thinking: str = ""
    usage: Usage | None = None  # the last call's, as the API reported it
    error: ModelError | None = None
    cancelled: bool = False
    estimate: int = 0  # our count of the last call's prompt tokens
    calls: tuple[ToolCall, ...] = ()  # what the last call asked to run
    rounds: list[rounds.Round] = field(default_factory=list)
    said: list[str] = field(default_factory=list)  # text the model wrote before calling tools
    spent: Usage = field(default_factory=Usage)  # the tool rounds' usage, recorded already
    first_estimate: int = 0  # the first call's prompt estimate (for calibration)
    first_usage: Usage | None = None
    grant: Grant | None = None  # what the spending limits set aside for the last call
    stopped_by: str = ""  # who pressed Stop (bot/control.py), when that cut it

    @property
    def state(self) -> str:
        """What the usage table says of it: "ok", "cut_off", "stopped" or the error's
        class name."""
        if self.stopped_by:
            return "stopped"
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
    tools: Mapping[str, Tool] = field(default_factory=dict)
    replace: bool = False  # a Regenerate: the answer replaces the stored one


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
        self.toolbox = Toolbox(())
        self.links: dict[str, Links] = {}  # by platform, registered by the adapters
        self.memory: Remembering | None = None  # summaries of what leaves the window
        self.limits: Limits | None = None  # spending limits, checked before every call
        self.unlimited: Callable[[Message], bool] = lambda message: False
        # Reads attached documents and voice messages before a question is stored; the
        # adapters use it through `Engine.pipeline.readers` (bot/attachments.py).
        self.readers = Readers.create(settings, store, accounts)
        self.replies = Replies()  # what Stop can reach; the engine shares its own

    async def run(
        self,
        message: Message,
        row: StoredMessage,
        reasoning: bool | None,
        emit: Emit,
        ready: Prepared | None = None,
        *,
        replace: bool = False,
    ) -> None:
        """Answer `message` (stored as `row`) and emit its events, ending with Done or Failed.

        `ready` is the conversation's window and settings when the engine read them with the
        question; otherwise both are read now, in one store round trip. `replace`: answer
        again (Regenerate) from the same window, storing the answer in place of the old one.
        """
        logs.bind(conversation=str(message.key), event_id=message.id)
        window, settings = ready or await self.read(message)
        if reasoning is None:
            reasoning = (
                self.settings.reasoning
                if settings.reasoning is None
                else (settings.reasoning != "off")
            )
        started = time.perf_counter()
        tools = self.toolbox.offered() if self._tools_on(settings) else {}
        turn = Turn(message, row, window, settings, reasoning, tools, replace)
        with metrics.replying(message.key.platform):
            outcome = await self._answer(turn, emit)
            await self._finish(turn, outcome, started, emit)

    def _tools_on(self, settings: ConversationSettings) -> bool:
        return settings.tools != "off"

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
                request, estimate, fixed = await self._request(turn, budget)
            except ContextTooLong as exc:
                return Outcome(error=exc, estimate=outcome.estimate)
            outcome = await self._converse(turn, request, estimate, budget, emit)
            if not (
                isinstance(outcome.error, ContextTooLong)
                and not outcome.answer
                and not outcome.rounds
            ):
                break
            log.warning(
                "context too long for %s; trimming harder and retrying once", turn.message.key
            )
            budget = fixed + (estimate - fixed) // 2  # half the conversation
        return outcome

    async def _request(self, turn: Turn, budget: int) -> tuple[ModelRequest, int, int]:
        """The request, its prompt tokens, and how many of those are not conversation."""
        message, row, window = turn.message, turn.row, turn.window
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        guide = context.tools_guide(self.settings.timezone) if turn.tools else ""
        memory = Memory.loads(turn.settings.memory).text
        system = context.system_message(
            self.settings.system_prompt, turn.settings.system or "", today, guide, memory
        )
        schemas = tuple(tool.spec.schema() for tool in turn.tools.values())
        fixed = _count_cached(system["content"]) + tokens.IMAGE_TOKENS * len(message.images)
        if schemas:
            fixed += _count_cached(json.dumps(schemas))
        # Questions queued behind this one are in the window too; they wait their turn.
        cut = _cut(window, row)
        total = fixed + window.tokens - sum(m.tokens for m in window.rows[cut:])
        new_start = context.trim_window(window.rows[:cut], total, budget, fixed)
        if new_start is not None:
            if self.memory is not None:
                self.memory.moved(message.key, turn.settings.memory, window.start, new_start)
            window.trim(new_start)
            await self.store.set_window_start(str(message.key), new_start)
            await self.store.cluster.publish("window", str(message.key))
            cut = _cut(window, row)
            total = fixed + window.tokens - sum(m.tokens for m in window.rows[cut:])
        if total > budget:
            raise ContextTooLong(f"message alone is ~{total} tokens; budget {budget}")
        messages = context.build_messages(system, window.merged(cut), images=message.images)
        request = ModelRequest(
            messages,
            turn.reasoning,
            self.settings.max_output_tokens,
            tools=schemas,
            cache_key=prompt_cache_key(str(message.key)),
        )
        return request, total, fixed

    async def _converse(
        self, turn: Turn, request: ModelRequest, estimate: int, budget: int, emit: Emit
    ) -> Outcome:
        """Call the model until it answers: run the tools it asks for in between, at most
        `tool_rounds` times, then ask it to answer with what it has."""
        done = Outcome(estimate=estimate, first_estimate=estimate)
        ctx = ToolContext(
            turn.message,
            scope_of(turn.message),
            self.store,
            self.settings.timezone,
            self.links.get(turn.message.key.platform),
        )
        while True:
            if self.replies.stopped_by(turn.row.id):  # stopped while waiting or in tools
                done.cancelled = True
                return done
            last = len(done.rounds) >= self.settings.tool_rounds
            step = dataclasses.replace(
                request,
                messages=request.messages + rounds.history(done.rounds),
                tool_choice="none" if last else "auto",
            )
            grant = await self._grant(turn, step, done.estimate)
            if grant is not None and grant.refusal:
                refused = Outcome(error=SpendLimitReached(grant.refusal), estimate=done.estimate)
                return self._last_call(done, refused)
            if grant is not None:
                step = dataclasses.replace(
                    step, max_tokens=grant.max_tokens, reasoning=grant.reasoning
                )
            call = await self._stream(step, emit, turn.row.id)
            call.estimate, call.grant = done.estimate, grant
            if not done.rounds:
                done.first_usage = call.usage
            if not (call.calls and turn.tools and not last) or call.error or call.cancelled:
                return self._last_call(done, call)
            if not await self._tool_round(turn, ctx, call, done, budget, emit):
                return done

    async def _grant(self, turn: Turn, step: ModelRequest, estimate: int) -> Grant | None:
        """What the spending limits allow this call (None: no limits apply to its asker)."""
        if self.limits is None or self.unlimited(turn.message):
            return None
        message = turn.message
        prompt = int(estimate * self.accounts.calibration.ratio)
        return await self.limits.grant(
            message.key, message.author.id, prompt, step.max_tokens, step.reasoning
        )

    async def _tool_round(
        self, turn: Turn, ctx: ToolContext, call: Outcome, done: Outcome, budget: int, emit: Emit
    ) -> bool:
        """Run the tools `call` asked for and add the round to `done`; False if cut short."""
        usage = call.usage or Usage(call.estimate, await tokens.count_async(call.answer))
        record = self.accounts.usage_record(
            turn.message.key, turn.message.author.id, usage, 0.0, "ok", kind="tool_round"
        )
        emit(ToolActivity(activity(call.calls, turn.tools, ctx)))
        try:
            recorded = asyncio.ensure_future(self.store.record_usage(record))
            results = await run_round(
                call.calls,
                turn.tools,
                ctx,
                seconds=self.settings.tool_timeout,
                room=budget - call.estimate,
            )
            await recorded
            if self.limits is not None:
                await self.limits.release(call.grant)
        except asyncio.CancelledError:
            done.cancelled = True
            return False
        emit(ToolActivity(""))
        metrics.tools_ran(call.calls, results, turn.tools)
        if len(done.rounds) + 1 >= self.settings.tool_rounds:
            results = (*results[:-1], f"{results[-1]}\n\n{LIMIT_NOTE}")
        done.rounds.append(rounds.Round(call.calls, results, call.answer))
        done.spent = _add(done.spent, usage)
        if call.thinking:
            done.thinking += call.thinking + "\n\n"
        if call.answer:
            done.said.append(call.answer)
            emit(TextDelta("\n\n"))
        added = await tokens.count_async(json.dumps(done.rounds[-1].messages()))
        done.estimate = call.estimate + added
        return True

    @staticmethod
    def _last_call(done: Outcome, call: Outcome) -> Outcome:
        """The reply's outcome: the last call's, with the rounds before it."""
        call.rounds, call.said, call.spent = done.rounds, done.said, done.spent
        call.thinking = done.thinking + call.thinking
        call.first_estimate, call.first_usage = done.first_estimate, done.first_usage
        return call

    async def _stream(self, request: ModelRequest, emit: Emit, question: int = 0) -> Outcome:
        outcome = Outcome()
        answer: list[str] = []
        thinking: list[str] = []
        emit(Started(question) if question else STARTED)
        with self.replies.streaming(question):  # Stop cancels the read here
            try:
                async for event in self.model.stream(request):
                    if isinstance(event, AnswerChunk):
                        answer.append(event.text)
                        emit(TextDelta(event.text))
                    elif isinstance(event, ThinkingChunk):
                        thinking.append(event.text)
                        emit(ThinkingDelta(event.text))
                    elif isinstance(event, ToolCalls):
                        outcome.calls = event.calls
                    elif isinstance(event, Finished):
                        # A stream without usage leaves None: the estimate is billed instead.
                        outcome.usage = event.usage if event.usage.reported else None
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
        stopper = self.replies.finish(turn.row.id)  # from here on, Stop is too late
        if stopper and outcome.cancelled:
            outcome.stopped_by = stopper
        answer_tokens = await tokens.count_async(outcome.answer) if outcome.answer else 0
        stored_rounds = rounds.dumps(outcome.rounds)
        if stored_rounds:
            answer_tokens += await tokens.count_async(stored_rounds)
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
        # A Regenerate that produced nothing keeps the answer it was to replace.
        kept = turn.replace and not outcome.answer and failed is None
        if failed is None and not kept:
            row = _answer_row(message, turn.row, outcome, answer_tokens)
            row = dataclasses.replace(row, rounds=stored_rounds)
            stored = self._replace(turn, row) if turn.replace else self.store.add_message(row)
            writes.append(stored)
        if outcome.stopped_by:
            conversation = str(message.key)
            writes.append(
                self.store.note_reply(turn.row.id, conversation, stopped_by=outcome.stopped_by)
            )
        results = await asyncio.gather(*writes)  # together: one store round trip
        metrics.reply_done(message.key.platform, outcome.state)
        if self.limits is not None:
            await self.limits.release(outcome.grant)  # its cost is in the usage table now
        if failed is not None or kept:
            emit(ReplyFailed(failed.user_message if failed else KEPT))
            return
        if outcome.first_usage and not outcome.cancelled:
            first = outcome.first_usage.prompt_tokens
            await self.accounts.calibrate(outcome.first_estimate, first)
        notice = CUT_BY_SHUTDOWN if outcome.cancelled else ""
        if outcome.stopped_by:
            notice = stopped_notice(outcome.stopped_by)
        if outcome.error:
            notice = f"({outcome.error.user_message})"
        emit(
            ReplyDone(
                text="\n\n".join(part for part in (*outcome.said, outcome.answer) if part),
                thinking=outcome.thinking,
                usage=_add(outcome.spent, usage),
                cut_off=bool(notice),
                notice=notice,
                show_thinking=turn.settings.reasoning == "show",
                tools=tuple(call.name for r in outcome.rounds for call in r.calls),
                question=turn.row.id,
                answer=answer if isinstance(answer := results[1], int) else 0,
            )
        )

    async def _replace(self, turn: Turn, row: NewMessage) -> int:
        """Store a Regenerate's answer in place of the old one (kept as a version)."""
        answer = await self.store.replace_answer(turn.row.id, row)
        # The old answer left the store: no process may go on with a window holding it.
        self.windows.forget(turn.message.key)
        await self.store.cluster.publish("window", str(turn.message.key))
        return answer


def _cut(window: Window, question: StoredMessage) -> int:
    """How many rows of `window` the prompt for `question` reads: those up to the question
    itself, not questions queued behind it, nor its own earlier answer (Regenerate)."""
    return bisect.bisect(window.order, (question.position, question.id))


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
        a.cached_tokens + b.cached_tokens,
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
