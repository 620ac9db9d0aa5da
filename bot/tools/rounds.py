"""The tool rounds of one answer, as stored with it and replayed in later prompts.

A round is what the model asked for (its `tool_calls`, and any text it wrote first) and
what each call returned. Replayed in order (assistant message with `tool_calls`, then one
`tool` message per call id) they form a history the API accepts, and because the JSON
is written once and read back unchanged, the prompt prefix stays byte-stable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from bot.model import ChatMessage, ToolCall


@dataclass(frozen=True)
class Round:
    calls: tuple[ToolCall, ...]
    results: tuple[str, ...]  # one per call, in the same order
    text: str = ""  # what the model wrote before it called

    def messages(self) -> list[ChatMessage]:
        calls = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in self.calls
        ]
        replies: list[ChatMessage] = [
            {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result}
            for call, result in zip(self.calls, self.results, strict=True)
        ]
        return [{"role": "assistant", "content": self.text, "tool_calls": calls}, *replies]


def dumps(rounds: Sequence[Round]) -> str:
    """Rounds as the `rounds` column holds them ("" for none)."""
    if not rounds:
        return ""
    return json.dumps(
        [
            {
                "text": r.text,
                "calls": [[c.id, c.name, c.arguments] for c in r.calls],
                "results": list(r.results),
            }
            for r in rounds
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def loads(raw: str) -> tuple[Round, ...]:
    """The rounds of a stored answer; unreadable JSON reads as none (logged by no one:
    the answer itself still replays)."""
    if not raw:
        return ()
    try:
        data = json.loads(raw)
        return tuple(
            Round(
                calls=tuple(ToolCall(str(i), str(n), str(a)) for i, n, a in r["calls"]),
                results=tuple(str(x) for x in r["results"]),
                text=str(r.get("text", "")),
            )
            for r in data
            if len(r["calls"]) == len(r["results"]) and r["calls"]
        )
    except (ValueError, TypeError, KeyError):
        return ()


def history(rounds: Sequence[Round]) -> list[ChatMessage]:
    """The chat messages that replay `rounds`, in order."""
    return [message for r in rounds for message in r.messages()]
