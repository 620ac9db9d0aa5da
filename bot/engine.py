"""The conversation service: what the adapters call.

Adapters hand it platform-neutral `Message`s. For each message it answers, it stores
the message, waits for the conversation's earlier replies to finish (one reply in
flight per conversation; different conversations run in parallel) and runs the reply
pipeline (`bot/pipeline.py`) in its own task, so a reply is stored even if the
adapter stops listening half-way. Commands go to the registry (`bot/commands`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from bot import access, commands, control, journal, tokens
from bot.accounting import Accounts, prices_of
from bot.catchup import NothingSaid, SpanError, find_span
from bot.cluster import LocalCluster
from bot.config import Settings
from bot.digests import Digests, Poster
from bot.journal import Journal, Recoverer
from bot.limits import Limits
from bot.memory import Remembering
from bot.model import ModelClient
from bot.pipeline import Emit, Prepared, ReplyPipeline
from bot.retention import Retention
from bot.store import (
    AuditEntry,
    NewMessage,
    PlaceInfo,
    Store,
    StoredMessage,
    UsageTotals,
)
from bot.summaries import Summarizer, SummaryFailed, footer
from bot.text import repair
from bot.tools import Links, place_info, place_of, scope_for
from bot.tools.builtin import BUILTINS
from bot.tools.loop import Toolbox, ToolSource
from bot.types import (
    DM,
    Author,
    CommandResult,
    ConversationKey,
    ConversationSettings,
    Message,
    Place,
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
)
from bot.window import Windows

log = logging.getLogger("teambot.engine")

THINK_PREFIX = "think:"
SHUTTING_DOWN = "I'm restarting right now; please ask again in a moment."
BUG = "Something went wrong on my side; the details are in the bot's log."


def parse_think(text: str, override: bool | None) -> tuple[str, bool | None]:
    """Strip a leading `think:` and report whether this message asks for reasoning."""
    stripped = text.lstrip()
    if stripped[: len(THINK_PREFIX)].lower() == THINK_PREFIX:
        return stripped[len(THINK_PREFIX) :].lstrip(), True if override is None else override
    return text, override


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        model: ModelClient,
        *,
        tool_sources: Sequence[ToolSource] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.accounts = Accounts(store, model.model, prices_of(settings))
        self.pipeline = ReplyPipeline(
            settings, store, model, self.accounts, self.conversation_settings
        )
        self.summarizer = Summarizer(model, store, self.accounts, settings.context_tokens)
        self.pipeline.memory = Remembering(self.summarizer, store, self.set_setting)
        self.digests = Digests(store, self._digest, settings.timezone)
        self.retention = Retention(store, settings)
        self.retention.purged = self._drop_cached_text
        self.limits = self.pipeline.limits = self.summarizer.limits = Limits(settings, store)
        self.pipeline.unlimited = self._unlimited
        builtins = [BUILTINS[name] for name in settings.tools]
        self.pipeline.toolbox = Toolbox(builtins, tool_sources if settings.tools else ())
        # The place each conversation was last filed under by this process: a write is
        # needed only when it changes (the store holds the truth, this only saves writes).
        self._places: dict[ConversationKey, PlaceInfo] = {}
        # Replies of this process per conversation, in flight or queued (the order across
        # processes is the store's `cluster.turn`; this only says whether to prefetch).
        self._busy: dict[ConversationKey, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.journal = Journal(store)  # replies in progress; adapters' schedulers report
        self._recoverers: dict[str, Recoverer] = {}
        self._sweeper: asyncio.Future[None] | None = None
        self._settings: dict[ConversationKey, ConversationSettings] = {}
        # Replies of this process that Stop can reach (bot/control.py).
        self.replies = self.pipeline.replies = control.Replies()

    async def start(self) -> None:
        self.store.cluster.on_change(self._changed_elsewhere)
        for source in self.pipeline.toolbox.sources:
            source.start()
        await self.accounts.load()
        self.digests.start()
        self.retention.start()

    # What adapters call

    def register_recoverer(self, platform: str, recoverer: Recoverer) -> None:
        """How `platform` edits a reply a crash cut short; its orphans are marked now."""
        self._recoverers[platform] = recoverer
        self._spawn(self._recover(platform, recoverer))
        # Only processes sharing the store can die while this one runs; alone, every
        # orphan is a previous process's and was taken just now.
        if self._sweeper is None and not isinstance(self.store.cluster, LocalCluster):
            self._sweeper = asyncio.ensure_future(journal.sweep(self.store, self._recoverers))

    async def _recover(self, platform: str, recoverer: Recoverer) -> None:
        try:
            await journal.recover(self.store, platform, recoverer)
        except Exception:
            log.exception("recovering cut-off replies on %s failed", platform)

    def register_links(self, platform: str, links: Links) -> None:
        """How `platform` builds and reads message links (for the tools' citations)."""
        self.pipeline.links[platform] = links

    async def spending(
        self, key: ConversationKey, user_id: str
    ) -> list[tuple[str, float, float | None]]:
        budgets = self.limits.budgets(key, user_id, time.time())
        spent = await self.store.spent(budgets)
        labels = ("You, today", "You, this month", "This channel, today", "The whole bot, today")
        return [(label, *spent[b.scope]) for label, b in zip(labels, budgets, strict=True)]

    async def set_spend_limit(self, call: commands.Call, scope: str, amount: float | None) -> None:
        await self.store.set_spend_limit(scope, amount)
        self.limits.overrides_changed()
        await self.store.cluster.publish("limits")
        shown = "off" if amount is None else f"{amount:.2f}"
        await self.audit(call, "limits", f"{scope} = {shown}")

    async def audit(self, call: commands.Call, action: str, detail: str) -> None:
        """Append what `call`'s author changed to the audit table."""
        entry = AuditEntry(call.key.platform, call.author.id, action, detail)
        await self.store.add_audit(entry)

    def _unlimited(self, message: Message) -> bool:
        """Admins pass spending limits only when TEAMBOT_ADMINS_UNLIMITED says so."""
        return self.settings.admins_unlimited and self.is_admin(message.author)

    def register_poster(self, platform: str, poster: Poster) -> None:
        """How to post a message into a channel of `platform` unprompted (digests)."""
        self.digests.posters[platform] = poster

    async def _digest(self, key: ConversationKey, now: float) -> str | None:
        """The digest of the day up to `now` for channel `key`, or None after a quiet day."""
        author = Author("digest", "daily digest")
        call = commands.Call(self, key, author, "1d", True, Place(key.channel))
        try:
            text = await self._summary(call, now)
        except NothingSaid:
            return None
        except (SpanError, SummaryFailed) as error:
            text = str(error)
        return f"**Daily digest**\n\n{text}"

    def tool_names(self) -> list[str]:
        return list(self.pipeline.toolbox.offered())

    def is_admin(self, author: Author | str) -> bool:
        """Listed in TEAMBOT_ADMIN_IDS, or (given an Author) an admin on its platform."""
        if isinstance(author, str):
            return access.is_admin(self.settings, author)
        return access.is_admin(self.settings, author.id, author.platform_admin)

    def refusal(
        self,
        key: ConversationKey,
        author: Author,
        *,
        is_group: bool = True,
        place: Place | None = None,
        roles: tuple[str, ...] = (),
        channels: tuple[str, ...] = (),
    ) -> str | None:
        """The sentence for a caller the access rules refuse there, or None when allowed.
        Commands answer it privately every time; adapters ask before a slash-command
        question shows anything."""
        decision = self._access(key, author, is_group, place, roles, channels)
        return None if decision else decision.sentence

    def _access(
        self,
        key: ConversationKey,
        author: Author,
        is_group: bool,
        place: Place | None,
        roles: tuple[str, ...],
        channels: tuple[str, ...],
    ) -> access.Decision:
        is_dm = not is_group or (place is not None and place.visibility == DM)
        where = channels or (key.channel,)
        admin = author.platform_admin
        asker = access.Asker(author.id, where, roles, is_dm, admin, author.is_bot)
        return access.decide(self.settings, asker)

    def allows(self, message: Message) -> bool:
        """Whether the access rules let `message` be answered and stored (adapters skip
        downloading a refused message's files)."""
        return bool(self._message_access(message))

    def _message_access(self, message: Message) -> access.Decision:
        m = message
        return self._access(m.key, m.author, m.is_group, m.place, m.roles, m.channels)

    async def claim_event(self, source: str, event_id: str) -> bool:
        return await self.store.claim_event(f"{source}:{event_id}")

    async def record(self, message: Message) -> bool:
        """Store a message as context without answering it (not when the access rules
        refuse its author or channel: refused messages are not stored)."""
        decision = self._message_access(message)
        if not decision:
            log.debug("not storing %s in %s: %s", message.id, message.key, decision.reason)
            return False
        row, _ = await asyncio.gather(
            self.store.add_message(await _new_row(message, message.text)),
            self._note_place(message),
        )
        return row is not None

    async def place_changed(self, key: ConversationKey, place: Place) -> None:
        """A channel's name or visibility changed (the platform said so, unasked)."""
        info = place_info(key, place)
        await self.store.note_place(str(key), info)
        self._places[key] = info

    async def _note_place(self, message: Message) -> None:
        place = place_of(message)
        if self._places.get(message.key) != place:
            await self.store.note_place(str(message.key), place)
            self._places[message.key] = place

    async def edit(self, key: ConversationKey, message_id: str, text: str) -> bool:
        text = repair(text)  # platform text, at the door (bot/text.py)
        count = await tokens.count_async(text)
        changed = await self.store.update_message(str(key), message_id, text, count)
        await self._window_changed(key)
        return changed

    async def delete(self, key: ConversationKey, message_id: str) -> bool:
        deleted = await self.store.delete_message(str(key), message_id)
        await self._window_changed(key)
        return deleted

    async def _window_changed(self, key: ConversationKey) -> None:
        """Rows of `key` changed in place: no process may go on with its cached window."""
        self.pipeline.windows.forget(key)
        await self.store.cluster.publish("window", str(key))

    # Stop, Regenerate, feedback and listening (bot/control.py)

    async def stop(self, question: int, by: Author, *, admin: bool = False) -> str:
        """Stop the reply to stored question `question` (`Started.question`), in whichever
        process it runs; one short sentence for the clicker (show it privately). Only the
        asker or an admin may: `admin` is the platform's word (e.g. Discord's Manage
        Messages), TEAMBOT_ADMIN_IDS and `by.platform_admin` count too."""
        return await control.stop(self, question, by, admin=admin)

    def regenerate(
        self, question: int, by: Author, *, admin: bool = False
    ) -> AsyncIterator[ReplyEvent]:
        """Answer `question` again with the context its answer had, replacing the stored
        answer (the old one is kept as a previous version): the usual reply events, whose
        ReplyDone carries the new answer id; one ReplyFailed when it may not (same people
        as `stop`) or the answer is still being written."""
        return control.regenerate(self, question, by, admin=admin)

    async def feedback(self, question: int, by: Author, value: int) -> str:
        """Store `by`'s 👍 (+1) or 👎 (-1) on `question`'s current answer; one vote per
        person per answer, the other button changes it. One sentence for the clicker."""
        return await control.feedback(self, question, by, value)

    async def answer_posted(self, answer: int, platform_id: str) -> bool:
        """The platform's id of the message that shows answer `answer` (`ReplyDone.answer`),
        for links to it (`teambot feedback`); adapters call it once the answer is posted."""
        return await self.store.answer_posted(answer, platform_id)

    async def listening(self, key: ConversationKey) -> bool:
        """Whether `listen on` holds where `key` is: the channel's setting, which its
        threads share. Adapters answer every message there without a mention."""
        channel = control.listening_key(key)
        return (await self.conversation_settings(channel)).listen == "on"

    async def has_answered(self, key: ConversationKey) -> bool:
        """Whether the bot has answered in this conversation (ever, not just since start)."""
        return await self.store.answered(str(key))

    async def get_meta(self, name: str) -> str | None:
        """A value an adapter keeps across restarts (e.g. its command-sync fingerprint)."""
        return await self.store.get_meta(name)

    async def set_meta(self, name: str, value: str) -> None:
        await self.store.set_meta(name, value)

    async def forget(self, key: ConversationKey) -> int:
        """Delete the conversation's messages and its running summary (settings stay)."""
        await self._memory_settled()
        await self.set_setting(key, "memory", None)
        count = await self.store.forget(str(key))
        await self._window_changed(key)
        return count

    async def _memory_settled(self) -> None:
        """Let summaries being written land first, so none writes deleted text back after."""
        if self.pipeline.memory is not None:
            await self.pipeline.memory.idle()

    def _drop_cached_text(self) -> None:
        """Deleted messages may sit in cached windows or memory summaries: drop them all,
        here and in every other process."""
        self._drop_texts()
        self._spawn(self.store.cluster.publish("texts"))

    def _drop_texts(self) -> None:
        self.pipeline.windows = Windows(self.store, self.pipeline.windows.size)
        self._settings.clear()

    def _changed_elsewhere(self, topic: str, key: str) -> None:
        """Another process changed `topic` (see bot.cluster.OnChange): drop what it touched."""
        if topic in ("texts", "*"):
            self._drop_texts()
        if topic in ("limits", "*"):
            self.limits.overrides_changed()
        if topic == "settings":
            for cached in [k for k in self._settings if str(k) == key]:
                del self._settings[cached]
        if topic == "window":
            self.pipeline.windows.forget_conversation(key)
        if topic == control.STOP_TOPIC:
            self.replies.news(key)  # cancelling is synchronous: nothing to schedule

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def forget_user(self, call: commands.Call) -> int:
        """Delete every message the caller wrote on this platform, in every conversation,
        and their DM conversations with the bot (usage rows stay, anonymised)."""
        platform = call.key.platform
        await self._memory_settled()
        count = await self.store.forget_user(platform, call.author.id)
        self._drop_cached_text()
        await self.audit(call, "forget", f"{count} messages on {platform}")
        return count

    async def conversation_settings(self, key: ConversationKey) -> ConversationSettings:
        cached = self._settings.get(key)
        if cached is None:
            stored = await self.store.settings(str(key))
            cached = self._settings[key] = ConversationSettings(
                reasoning=stored.get("reasoning"),
                system=stored.get("system"),
                tools=stored.get("tools"),
                memory=stored.get("memory"),
                digest=stored.get("digest"),
                listen=stored.get("listen"),
            )
        return cached

    async def set_setting(self, key: ConversationKey, name: str, value: str | None) -> None:
        """Change one of the conversation's settings (see ConversationSettings); None resets."""
        if name not in ("reasoning", "system", "tools", "memory", "digest", "listen"):
            raise ValueError(f"no conversation setting {name!r}")
        self._settings.pop(key, None)
        await self.store.set_setting(str(key), name, value)
        await self.store.cluster.publish("settings", str(key))

    async def seed(self, source: ConversationKey, target: ConversationKey, limit: int = 20) -> int:
        """Start an empty conversation with the newest messages of another one."""
        count = await self.store.seed(str(source), str(target), limit)
        await self._window_changed(target)
        return count

    async def inherit_settings(self, source: ConversationKey, target: ConversationKey) -> None:
        """Give `target` the settings of `source` unless it has its own already."""
        defaults = (await self.conversation_settings(source)).changed()
        if defaults and not (await self.conversation_settings(target)).changed():
            for name, value in defaults.items():
                await self.set_setting(target, name, value)

    async def usage_totals(
        self,
        *,
        since: float | None = None,
        user_id: str | None = None,
        key: ConversationKey | None = None,
        kind: str | None = None,
    ) -> UsageTotals:
        conversation = None if key is None else str(key)
        return await self.store.usage_totals(
            since=since, user_id=user_id, conversation=conversation, kind=kind
        )

    async def command(
        self,
        key: ConversationKey,
        author: Author,
        name: str,
        args: str,
        *,
        is_group: bool = True,
        place: Place | None = None,
        spaces: tuple[str, ...] = (),
        roles: tuple[str, ...] = (),
        channels: tuple[str, ...] = (),
    ) -> CommandResult:
        """Run command `name`; `place` and `spaces` say what its caller may read (see
        Message), for commands that read history; `roles` and `channels` are the access
        facts (see Message). A refused caller gets one private sentence."""
        decision = self._access(key, author, is_group, place, roles, channels)
        if not decision:
            log.info("refused /%s by %s in %s: %s", name, author.id, key, decision.reason)
            return CommandResult(decision.sentence, private=True)
        call = commands.Call(
            self, key, author, repair(args).strip(), is_group, place, spaces, roles, channels
        )
        return await commands.REGISTRY.run(name, call)

    async def summarize(self, call: commands.Call, now: float | None = None) -> str:
        try:
            return await self._summary(call, now)
        except (SpanError, SummaryFailed) as error:
            return str(error)

    async def _summary(self, call: commands.Call, now: float | None) -> str:
        """The summary `call` asks for, with its footer; raises NothingSaid for an empty
        span, SpanError for one the caller cannot read, SummaryFailed."""
        key = call.key
        scope = scope_for(key, call.place, call.spaces)
        links = self.pipeline.links.get(key.platform)
        span = await find_span(self.store, scope, key, call.author.id, call.args, links, now)
        if not span.rows:
            raise NothingSaid(f"Nothing was said {span.what}.")

        def link(row: StoredMessage) -> str | None:
            if links is None or not row.platform_id:
                return None
            return links.permalink(row.conversation, row.platform_id)

        summary = await self.summarizer.span(
            span.rows,
            key=key,
            user_id=call.author.id,
            timezone=self.settings.timezone,
            link=link,
        )
        return f"{summary.text}\n\n{footer(span.what, span.rows, summary, self.settings.timezone)}"

    def answers_privately(
        self,
        key: ConversationKey,
        author: Author,
        name: str,
        args: str,
        *,
        is_group: bool,
        place: Place | None = None,
        roles: tuple[str, ...] = (),
        channels: tuple[str, ...] = (),
    ) -> bool:
        """Whether `command` will answer only its caller (known before it runs); a refused
        caller's answer is private."""
        if not self._access(key, author, is_group, place, roles, channels):
            return True
        call = commands.Call(self, key, author, args.strip(), is_group, place, (), roles, channels)
        return commands.REGISTRY.is_private(name, call)

    async def reply(self, message: Message) -> AsyncIterator[ReplyEvent]:
        """Answer `message`: text and thinking deltas, then one ReplyDone or ReplyFailed.

        Yields nothing at all for a message that was already answered. A message the
        access rules refuse is not stored; its author gets one ReplyFailed the first time
        that day (claimed in the store, so across processes and restarts), then nothing.
        The reply is recorded in `journal` before it shows, so a crash never leaves it
        looking finished (bot/journal.py; the delivery reports what shows).
        """
        if self._closing:
            yield ReplyFailed(SHUTTING_DOWN)
            return
        decision = self._message_access(message)
        if not decision:
            log.info("refused %s in %s: %s", message.id, message.key, decision.reason)
            if await self._first_refusal_today(message):
                yield ReplyFailed(decision.sentence)
            return
        text, reasoning = parse_think(message.text, message.reasoning)
        row, ready = await self._store_question(message, text)
        if row is None:
            return
        self.journal.begin(row.id)
        queue: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        task = asyncio.create_task(self._answer(message, row, reasoning, queue.put_nowait, ready))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        while True:
            event = await queue.get()
            yield event
            if isinstance(event, ReplyDone | ReplyFailed):
                return

    async def _first_refusal_today(self, message: Message) -> bool:
        platform, user = message.key.platform, message.author.id
        claim = access.refusal_claim(platform, user, time.time(), self.settings.timezone)
        return await self.store.claim_event(claim)

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
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.digests.aclose()
        await self.retention.aclose()
        if self.pipeline.memory is not None:
            await self.pipeline.memory.aclose()
        await asyncio.gather(*(source.aclose() for source in self.pipeline.toolbox.sources))
        await self.model.aclose()
        await self.store.aclose()

    async def _store_question(
        self, message: Message, text: str
    ) -> tuple[StoredMessage | None, Prepared | None]:
        """Claim the answer and store the question in one transaction, before any model call.

        When no reply of this conversation is in flight, its window and settings are read in
        the same store round trip (nothing else is using them), so the reply can start from
        them; otherwise its turn reads them when it comes.
        """
        key = message.key
        question = await _new_row(message, text)
        # A task, so the claim reaches the store before the reads below.
        claim = asyncio.ensure_future(
            self.store.add_question(f"answer:{key}:{message.id}", question)
        )
        noted = self._note_place(message)
        if key in self._busy:
            row, _ = await asyncio.gather(claim, noted)
            if row is not None:
                self.pipeline.windows.saw_question(key, row)
            return row, None
        row, (window, settings), _ = await asyncio.gather(claim, self.pipeline.read(message), noted)
        if row is None or not window.holds(row):
            # Read before the question landed (a store that runs calls in parallel), or a
            # message recorded before as context now carries the question: read again.
            self.pipeline.windows.forget(key)
            return row, None
        return row, (window, settings)

    # One reply at a time per conversation, in every process

    async def _answer(
        self,
        message: Message,
        row: StoredMessage,
        reasoning: bool | None,
        emit: Emit,
        ready: Prepared | None,
        replace: bool = False,
    ) -> None:
        """Run the reply in the conversation's turn; `replace`: a Regenerate, whose
        answer replaces the stored one (bot/control.py)."""
        key = message.key
        self._busy[key] = self._busy.get(key, 0) + 1
        self.replies.begin(row.id)
        try:
            if reasoning is not None and not replace:  # kept for a later Regenerate
                await self.store.note_reply(row.id, str(key), reasoning=reasoning)
            async with self.store.cluster.turn(str(key), row.id) as waited:
                if waited:
                    ready = None  # an earlier reply went first and changed the window
                await self.pipeline.run(message, row, reasoning, emit, ready, replace=replace)
        except asyncio.CancelledError:
            emit(ReplyFailed(SHUTTING_DOWN))  # cancelled while still waiting for its turn
            raise
        except Exception:
            log.exception("reply to %s in %s failed", message.id, key)
            emit(ReplyFailed(BUG))
        finally:
            self.replies.end(row.id)
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]


async def _new_row(message: Message, text: str) -> NewMessage:
    return NewMessage(
        conversation=str(message.key),
        role="user",
        author_id=message.author.id,
        author_name=message.author.name,
        text=text,
        tokens=await tokens.count_async(text),
        platform_id=message.id,
        attachments=message.attachments,
    )
