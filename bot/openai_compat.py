"""`ModelClient` for OpenAI-compatible chat completions servers (TEAMBOT_PROVIDER=openai):
vLLM, SGLang, llama.cpp's server, OpenRouter, LiteLLM.

The wire format is Mistral's SSE stream with OpenAI's conventions, so the client is
`MistralClient` (retries, stream parsing, split tool-call deltas, error mapping) with the
request and a few error cases changed:

- usage is asked for with `stream_options.include_usage` (vLLM sends none otherwise); a
  server that still sends none gets the estimate billed (bot/pipeline.py);
- images go as `{"url": ...}` objects, which every such server takes;
- reasoning is asked for the way the server takes it (its "flavor"): top-level
  `reasoning_effort` (vLLM, SGLang, LiteLLM), `reasoning.effort` (OpenRouter) or
  `chat_template_kwargs.reasoning_effort` (llama.cpp; vLLM rejects that field). With
  TEAMBOT_API_FLAVOR=auto the host or the server's `/models` answer tells which;
- thinking arrives as `delta.reasoning` or `delta.reasoning_content` (bot/mistral.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import httpx

from bot.errors import ContextTooLong, ModelBadRequest, ModelError, ModelRateLimited
from bot.mistral import MistralClient, Retryable
from bot.model import Capabilities, ChatMessage, ModelEvent, ModelRequest, is_mistral_model

log = logging.getLogger("teambot.model")

FLAVORS = ("vllm", "sglang", "llamacpp", "openrouter", "openai")
# What `/models` says owns the model, for servers that say it (OpenRouter is known by host).
OWNERS = {"llamacpp": "llamacpp", "vllm": "vllm", "sglang": "sglang"}
PROBE_TIMEOUT = 5.0
# vLLM/OpenRouter: "maximum context length is"; llama.cpp: "exceeds the available context
# size" (type exceed_context_size_error); Mistral behind LiteLLM: "too large for model".
CONTEXT_TOO_LONG = re.compile(
    r"context length|context size|exceed_context|too large for model|too many tokens",
    re.IGNORECASE,
)
NO_CREDIT = "The model provider's account has no credit left; an admin needs to top it up."


class OpenAICompatClient(MistralClient):
    provider = "openai"
    capabilities = Capabilities("openai")

    def __init__(
        self, api_key: str, base_url: str, model: str, *, flavor: str = "auto", **options: Any
    ) -> None:
        super().__init__(api_key, base_url, model, **options)
        self._base = base_url.rstrip("/")
        self.flavor: str | None = flavor if flavor in FLAVORS else flavor_of_host(base_url)
        self._probe = asyncio.Lock()

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        await self.detect_flavor()
        async with contextlib.aclosing(super().stream(request)) as events:
            async for event in events:
                yield event

    async def check(self, *, retry: bool = True, within: float | None = None) -> str:
        await self.detect_flavor()
        return await super().check(retry=retry, within=within)

    async def detect_flavor(self) -> str:
        """The server's flavor; asked of its `/models` once when neither the setting nor
        the host says it. A server that does not answer is taken as plain OpenAI."""
        async with self._probe:
            if self.flavor is None:
                self.flavor = await self._owner_flavor()
                log.info("openai: %s speaks the %s flavor", self._base, self.flavor)
        return self.flavor

    async def _owner_flavor(self) -> str:
        try:
            response = await self._client.get(self._base + "/models", timeout=PROBE_TIMEOUT)
            models = response.json().get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return "openai"
        for entry in models if isinstance(models, list) else []:
            owner = entry.get("owned_by") if isinstance(entry, dict) else None
            if isinstance(owner, str) and owner.lower() in OWNERS:
                return OWNERS[owner.lower()]
        return "openai"

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        body = dict(request.extra)  # these servers take OpenAI's optional fields as they are
        body.update(
            model=self.model,
            messages=[openai_message(message) for message in request.messages],
            max_tokens=request.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        body.update(reasoning_fields(self.flavor or "openai", request.reasoning, self.model))
        if request.tools:
            body.update(
                tools=list(request.tools),
                tool_choice=request.tool_choice,
                parallel_tool_calls=True,
            )
        return body

    async def _status_error(self, response: httpx.Response) -> ModelError | Retryable:
        error = await super()._status_error(response)
        if response.status_code == 402:  # OpenRouter and LiteLLM: out of credit / budget
            spent = ModelRateLimited(str(error), status=402)
            spent.user_message = NO_CREDIT
            return spent
        if isinstance(error, ModelBadRequest) and CONTEXT_TOO_LONG.search(str(error)):
            return ContextTooLong(str(error), status=error.status)
        return error


def flavor_of_host(base_url: str) -> str | None:
    """The flavor a well-known host implies; None when the server must be asked."""
    host = (urlsplit(base_url).hostname or "").lower()
    return "openrouter" if host == "openrouter.ai" or host.endswith(".openrouter.ai") else None


def reasoning_fields(flavor: str, reasoning: bool, model: str) -> dict[str, Any]:
    """How to ask this server for reasoning on or off.

    Mistral Small 4 takes only "none" and "high", and "none" is sent explicitly because
    the default is undocumented. Other models are left at their server's default when
    reasoning is off, as their accepted values differ.
    """
    if not reasoning and not is_mistral_model(model):
        return {}
    effort = "high" if reasoning else "none"
    if flavor == "openrouter":
        return {"reasoning": {"effort": effort}}
    if flavor == "llamacpp":
        # The chat template reads it; the top-level field exists only from b10434.
        return {"chat_template_kwargs": {"reasoning_effort": effort}}
    return {"reasoning_effort": effort}


def openai_message(message: ChatMessage) -> ChatMessage:
    """Mistral's image parts carry the URL as a string; OpenAI's as `{"url": ...}`."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = [
        {**part, "image_url": {"url": part["image_url"]}}
        if isinstance(part, dict)
        and part.get("type") == "image_url"
        and isinstance(part.get("image_url"), str)
        else part
        for part in content
    ]
    return {**message, "content": parts}
