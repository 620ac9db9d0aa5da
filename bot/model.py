"""The provider-neutral model interface the engine talks to.

A `ModelClient` turns a `ModelRequest` into a stream of `ModelEvent`s and raises only
`bot.errors.ModelError` subclasses. The Mistral implementation lives in
`bot.mistral`; other OpenAI-style providers can be added beside it without touching
the engine.
"""

from __future__ import annotations

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
    usage: Usage
    finish_reason: str = "stop"


ModelEvent = AnswerChunk | ThinkingChunk | ToolCalls | Finished


class ModelClient(Protocol):
    model: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Yield answer and thinking chunks, at most one `ToolCalls`, then one `Finished`."""
        ...

    async def aclose(self) -> None: ...
