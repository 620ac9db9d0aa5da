"""The provider-neutral model interface the engine talks to.

A `ModelClient` turns a `ModelRequest` into a stream of `ModelEvent`s and raises only
`bot.errors.ModelError` subclasses. The Mistral implementation lives in
`bot.mistral`; other OpenAI-style providers can be added beside it without touching
the engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.types import Usage

# Mistral chat message dicts: {"role": ..., "content": str | list[part]}.
ChatMessage = dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    messages: list[ChatMessage]
    reasoning: bool = False
    max_tokens: int = 4096
    extra: dict[str, Any] = field(default_factory=dict)
    # Function tools in Mistral's shape ({"type": "function", "function": {...}}); empty
    # means none are offered. `tool_choice` is "auto" or "none" (answer with what you have).
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str = "auto"
    # Names the conversation to the provider's prompt cache (see `prompt_cache_key`);
    # "" sends none.
    cache_key: str = ""


@dataclass(frozen=True)
class AnswerChunk:
    text: str


@dataclass(frozen=True)
class ThinkingChunk:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; `arguments` is JSON text as it wrote it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCalls:
    """The model wants these tools run before it answers (comes right before `Finished`)."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Finished:
    """The end of a call; `usage` is `Usage()` when the server reported none."""

    usage: Usage
    finish_reason: str = "stop"


ModelEvent = AnswerChunk | ThinkingChunk | ToolCalls | Finished


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, so callers can say so instead of failing (`teambot check`,
    `reasoning on`). A client offers it as its `capabilities` attribute."""

    provider: str = "mistral"
    reasoning: bool = True  # can think before answering when asked
    images: bool = True
    tools: bool = True
    usage: bool = True  # reports token usage (else the estimate is billed)
    prompt_cache: bool = False  # takes a prompt cache key and reports cached tokens


def capabilities_of(client: object) -> Capabilities:
    """The client's `capabilities`, or the defaults for a client that declares none."""
    found = getattr(client, "capabilities", None)
    return found if isinstance(found, Capabilities) else Capabilities()


MISTRAL_FAMILIES = ("mistral", "magistral", "ministral", "devstral", "codestral", "pixtral")


def is_mistral_model(model: str) -> bool:
    """Whether `model` (as any provider names it) is one of Mistral's, which Tekken counts."""
    name = model.lower()
    return any(family in name for family in MISTRAL_FAMILIES)


PROMPT_CACHE_SALT = "teambot prompt cache v1"  # not a secret: it only separates namespaces


def prompt_cache_key(conversation: str) -> str:
    """A stable key per conversation for the provider's prompt cache: a hash, so no id or
    text of the conversation ever leaves in it."""
    digest = hashlib.sha256(f"{PROMPT_CACHE_SALT}\0{conversation}".encode()).hexdigest()
    return digest[:32]


class ModelClient(Protocol):
    model: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Yield answer and thinking chunks, at most one `ToolCalls`, then one `Finished`."""
        ...

    async def aclose(self) -> None: ...
