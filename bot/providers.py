"""Which model client TEAMBOT_PROVIDER means, and what `teambot check` says about it.

One module per wire format, each built on `MistralClient`: bot/mistral.py (Mistral's own
API), bot/openai_compat.py (OpenAI-compatible servers), bot/puter.py (Puter's driver).
"""

from __future__ import annotations

from typing import Any

from bot import tokens
from bot.config import Settings
from bot.mistral import MistralClient
from bot.model import capabilities_of, is_mistral_model


def model_client(settings: Settings, **options: Any) -> MistralClient:
    """The client of TEAMBOT_PROVIDER; `options` tune its timeouts and retries."""
    if settings.provider == "openai":
        from bot.openai_compat import OpenAICompatClient

        return OpenAICompatClient(
            settings.api_key,
            settings.api_base_url,
            settings.model,
            flavor=settings.api_flavor,
            **options,
        )
    if settings.provider == "puter":
        from bot.puter import PuterClient

        return PuterClient(
            settings.puter_auth_token, settings.puter_api_url, settings.model, **options
        )
    return MistralClient(
        settings.mistral_api_key, settings.mistral_base_url, settings.model, **options
    )


def endpoint(settings: Settings) -> str:
    """Where the configured provider is reached."""
    if settings.provider == "openai":
        return settings.api_base_url
    if settings.provider == "puter":
        return settings.puter_api_url
    return settings.mistral_base_url


def token_counter(model: str) -> str:
    """How prompt tokens are counted before the provider reports them."""
    if not tokens.vocabulary_path().is_file():
        return "characters / 3 (the Tekken vocabulary is missing), calibrated against usage"
    if is_mistral_model(model):
        return "Tekken (Mistral's tokenizer), calibrated against the provider's usage"
    return f"Tekken as an estimate ({model} is not a Mistral model), calibrated against usage"


def provider_report(settings: Settings, client: MistralClient) -> list[str]:
    """`teambot check`'s lines about the provider: which, its token counter, its features."""
    flavor = getattr(client, "flavor", None)
    where = f"{settings.provider} at {endpoint(settings)}" + (f" ({flavor})" if flavor else "")
    return [
        f"✓ provider: {where}",
        f"✓ token counter: {token_counter(settings.model)}",
        *feature_lines(client),
    ]


def feature_lines(client: MistralClient) -> list[str]:
    can = capabilities_of(client)
    flavor = getattr(client, "flavor", None) or ""
    reasoning = {
        "mistral": "reasoning_effort none/high, thinking kept apart from the answer",
        "openai": f"{reasoning_field(flavor)}, thinking from reasoning / reasoning_content",
    }.get(can.provider, "")
    usage = {
        "mistral": "usage from the stream's last chunk",
        "openai": "usage via stream_options.include_usage (estimated if the server sends none)",
        "puter": "usage from the driver's usage line (estimated if it sends none)",
    }[can.provider]
    lines = ["✓ streaming text", "✓ images" if can.images else "- images: not supported"]
    lines.append("✓ tool calls" if can.tools else "- tool calls: not supported")
    lines.append(f"✓ reasoning: {reasoning}" if can.reasoning else "- reasoning: not supported")
    lines.append(f"✓ {usage}")
    if can.prompt_cache:
        lines.append("✓ prompt caching: prompt_cache_key per conversation, cached tokens priced")
    return [f"  {line}" for line in lines]


def reasoning_field(flavor: str) -> str:
    return {
        "openrouter": "reasoning.effort",
        "llamacpp": "chat_template_kwargs.reasoning_effort",
    }.get(flavor, "top-level reasoning_effort")
