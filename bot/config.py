"""The core's settings from the environment (and `.env`), validated once at start-up.

Every variable name here is part of the public contract. A bad value raises
`ConfigError` naming the variable and what it accepts; the CLI prints that one line
and exits 2. Each adapter parses its own settings from the same environment with the
helpers here (`adapters/*/settings.py`); `bot/app.py` puts them together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import ConfigError

__all__ = ["ConfigError", "Settings", "environment", "id_list", "integer", "load_settings", "url"]

MODEL_CONTEXT_WINDOW = 256_000
DEFAULT_SYSTEM_PROMPT = (
    "You are teambot, a helpful assistant in a team chat. Be concise and accurate. "
    "Messages from people are prefixed with their name in square brackets; "
    "do not add such a prefix to your own replies. Use Markdown for formatting."
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BUILTIN_TOOLS = ("search_messages", "read_messages", "current_time")


@dataclass(frozen=True)
class Settings:
    mistral_api_key: str = ""
    mistral_base_url: str = "https://api.mistral.ai/v1"
    model: str = "mistral-small-2603"
    database_url: str = "sqlite:///./teambot.db"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    context_tokens: int = 32_000
    max_output_tokens: int = 4096
    reasoning: bool = False
    admin_ids: frozenset[str] = field(default_factory=frozenset)
    log_level: str = "INFO"
    tools: tuple[str, ...] = BUILTIN_TOOLS  # built-in tools offered; () turns tools off
    tool_rounds: int = 4  # model rounds with tool calls per reply
    tool_timeout: float = 30.0  # seconds per tool call
    timezone: str = "UTC"
    mcp_config: str = ""  # path of an mcpServers JSON file
    mcp_servers: tuple[Any, ...] = ()  # its servers (bot.tools.mcp_servers.ServerConfig)
    # Who may use the bot (platform ids; empty allow lists mean everyone; block wins).
    allowed_users: frozenset[str] = field(default_factory=frozenset)
    blocked_users: frozenset[str] = field(default_factory=frozenset)
    allowed_channels: frozenset[str] = field(default_factory=frozenset)
    blocked_channels: frozenset[str] = field(default_factory=frozenset)
    allowed_roles: frozenset[str] = field(default_factory=frozenset)
    allow_dms: bool = True
    # What it may spend, in US dollars; None means no limit.
    user_daily_usd: float | None = None
    user_monthly_usd: float | None = None
    channel_daily_usd: float | None = None
    daily_usd: float | None = None
    admins_unlimited: bool = False
    # What it keeps: message text older than this many days is deleted (None: kept).
    retention_days: int | None = None
    # Which API answers (bot/app.py `model_client`): "mistral", "openai" (any
    # OpenAI-compatible server) or "puter"; and what its tokens cost, in US dollars per
    # million (defaults: Mistral Small 4's list prices; cached = 10% of input).
    provider: str = "mistral"
    api_base_url: str = ""  # TEAMBOT_API_BASE_URL, for "openai"
    api_key: str = ""  # TEAMBOT_API_KEY, optional for local servers
    api_flavor: str = "auto"  # TEAMBOT_API_FLAVOR: how that server takes reasoning
    puter_auth_token: str = ""
    puter_api_url: str = "https://api.puter.com"
    price_input: float = 0.15
    price_output: float = 0.60
    price_cached: float = 0.015
    # Attached documents and voice messages (bot/documents.py, bot/audio.py).
    ocr: bool = True  # False: PDFs are read locally (pypdf); no file leaves for OCR
    doc_tokens: int = 20_000  # document text inlined per message
    doc_pages: int = 50  # pages read per file
    audio_seconds: int = 600  # longest voice message or audio file transcribed
    # Operations: the /metrics and /healthz port (None: off) and the log line format.
    metrics_port: int | None = None
    log_format: str = "text"  # or "json": one JSON object per line


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file: KEY=VALUE lines, `#` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def environment(dotenv: Path | None = Path(".env")) -> dict[str, str]:
    """The process environment layered over `.env` (the real environment wins)."""
    merged = read_dotenv(dotenv) if dotenv else {}
    merged.update(os.environ)
    return merged


def integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(name, f"a whole number from {low} to {high} (got {raw!r})")
    return value


def optional_integer(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """`integer`, or None when the variable is empty."""
    return integer(env, name, low, low, high) if env.get(name, "").strip() else None


def url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not value.startswith(("http://", "https://", "ws://", "wss://")):
        raise ConfigError(name, f"an http(s) or ws(s) URL (got {value!r})")
    return value


def id_list(env: Mapping[str, str], name: str) -> list[str]:
    return [part.strip() for part in env.get(name, "").split(",") if part.strip()]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `env` (default: the environment plus `.env`)."""
    env = environment() if env is None else env
    max_output = integer(env, "TEAMBOT_MAX_OUTPUT_TOKENS", 4096, 1, MODEL_CONTEXT_WINDOW // 2)
    context_cap = MODEL_CONTEXT_WINDOW - max_output
    context = integer(env, "TEAMBOT_CONTEXT_TOKENS", min(32_000, context_cap), 1000, context_cap)

    reasoning = env.get("TEAMBOT_REASONING", "").strip().lower() or "none"
    if reasoning not in ("none", "high"):
        raise ConfigError("TEAMBOT_REASONING", f"none or high (got {reasoning!r})")

    log_level = env.get("TEAMBOT_LOG_LEVEL", "").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            "TEAMBOT_LOG_LEVEL", f"one of {', '.join(LOG_LEVELS)} (got {log_level!r})"
        )

    database_url = env.get("DATABASE_URL", "").strip() or "sqlite:///./teambot.db"
    if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(
            "DATABASE_URL", f"sqlite:///PATH or postgresql://... (got {database_url!r})"
        )

    model = env.get("TEAMBOT_MODEL", "").strip() or "mistral-small-2603"
    return Settings(
        **_tool_settings(env),
        **_control_settings(env),
        **_provider_settings(env),
        **_file_settings(env),
        **_ops_settings(env),
        mistral_api_key=env.get("MISTRAL_API_KEY", "").strip(),
        mistral_base_url=url(env, "MISTRAL_BASE_URL", "https://api.mistral.ai/v1").rstrip("/"),
        model=model,
        database_url=database_url,
        system_prompt=env.get("TEAMBOT_SYSTEM_PROMPT", "").strip() or DEFAULT_SYSTEM_PROMPT,
        context_tokens=context,
        max_output_tokens=max_output,
        reasoning=reasoning == "high",
        admin_ids=frozenset(id_list(env, "TEAMBOT_ADMIN_IDS")),
        log_level=log_level,
    )


def dollars(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip().removeprefix("$")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value < 1e9):  # also rejects nan and inf
        raise ConfigError(name, f"an amount in US dollars such as 2.50, or empty (got {raw!r})")
    return value


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"true or false (got {raw!r})")


def ids(env: Mapping[str, str], name: str) -> frozenset[str]:
    """A comma list of platform ids (Discord snowflakes, Slack U…/C…/S… ids)."""
    found = id_list(env, name)
    bad = [part for part in found if not ID.fullmatch(part)]
    if bad:
        raise ConfigError(name, f"a comma list of platform ids (got {bad[0]!r})")
    return frozenset(found)


def _control_settings(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "allowed_users": ids(env, "TEAMBOT_ALLOWED_USERS"),
        "blocked_users": ids(env, "TEAMBOT_BLOCKED_USERS"),
        "allowed_channels": ids(env, "TEAMBOT_ALLOWED_CHANNELS"),
        "blocked_channels": ids(env, "TEAMBOT_BLOCKED_CHANNELS"),
        "allowed_roles": ids(env, "TEAMBOT_ALLOWED_ROLES"),
        "allow_dms": flag(env, "TEAMBOT_ALLOW_DMS", True),
        "user_daily_usd": dollars(env, "TEAMBOT_USER_DAILY_USD"),
        "user_monthly_usd": dollars(env, "TEAMBOT_USER_MONTHLY_USD"),
        "channel_daily_usd": dollars(env, "TEAMBOT_CHANNEL_DAILY_USD"),
        "daily_usd": dollars(env, "TEAMBOT_DAILY_USD"),
        "admins_unlimited": flag(env, "TEAMBOT_ADMINS_UNLIMITED", False),
        "retention_days": optional_integer(env, "TEAMBOT_RETENTION_DAYS", 1, 36500),
    }


def _tool_settings(env: Mapping[str, str]) -> dict[str, Any]:
    tools = tuple(name.lower() for name in id_list(env, "TEAMBOT_TOOLS")) or BUILTIN_TOOLS
    if tools == ("none",):
        tools = ()
    unknown = sorted(set(tools) - set(BUILTIN_TOOLS))
    if unknown:
        raise ConfigError(
            "TEAMBOT_TOOLS",
            f"a comma list of {', '.join(BUILTIN_TOOLS)}, or none (got {', '.join(unknown)})",
        )
    timezone = env.get("TEAMBOT_TIMEZONE", "").strip() or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "TEAMBOT_TIMEZONE", f"an IANA time zone such as Europe/Paris (got {timezone!r})"
        ) from None
    mcp_config = env.get("TEAMBOT_MCP_CONFIG", "").strip()
    servers: tuple[Any, ...] = ()
    if mcp_config:
        if not Path(mcp_config).is_file():
            raise ConfigError(
                "TEAMBOT_MCP_CONFIG", f"the path of a JSON file (no file {mcp_config!r})"
            )
        from bot.tools.mcp_servers import load_servers  # the MCP SDK only when it is used

        servers = tuple(load_servers(mcp_config))
    return {
        "tools": tools,
        "tool_rounds": integer(env, "TEAMBOT_TOOL_ROUNDS", 4, 1, 20),
        "tool_timeout": float(integer(env, "TEAMBOT_TOOL_TIMEOUT", 30, 1, 600)),
        "timezone": timezone,
        "mcp_config": mcp_config,
        "mcp_servers": servers,
    }


def _file_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """How attached documents and voice messages are read (TEAMBOT_OCR, TEAMBOT_DOC_*...)."""
    return {
        "ocr": flag(env, "TEAMBOT_OCR", True),
        "doc_tokens": integer(env, "TEAMBOT_DOC_TOKENS", 20_000, 100, MODEL_CONTEXT_WINDOW),
        "doc_pages": integer(env, "TEAMBOT_DOC_PAGES", 50, 1, 1000),
        "audio_seconds": integer(env, "TEAMBOT_AUDIO_SECONDS", 600, 1, 3 * 3600),
    }


PROVIDERS = ("mistral", "openai", "puter")
API_FLAVORS = ("auto", "vllm", "sglang", "llamacpp", "openrouter", "openai")


def price(env: Mapping[str, str], name: str, default: float) -> float:
    """US dollars per million tokens; 0 for a server that costs nothing per token."""
    raw = env.get(name, "").strip().removeprefix("$")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e6:  # also rejects nan and inf
        raise ConfigError(name, f"US dollars per million tokens such as 0.15, or 0 (got {raw!r})")
    return value


def _provider_settings(env: Mapping[str, str]) -> dict[str, Any]:
    provider = env.get("TEAMBOT_PROVIDER", "").strip().lower() or "mistral"
    if provider not in PROVIDERS:
        raise ConfigError("TEAMBOT_PROVIDER", f"mistral, openai or puter (got {provider!r})")
    flavor = env.get("TEAMBOT_API_FLAVOR", "").strip().lower() or "auto"
    if flavor not in API_FLAVORS:
        raise ConfigError("TEAMBOT_API_FLAVOR", f"one of {', '.join(API_FLAVORS)} (got {flavor!r})")
    base = env.get("TEAMBOT_API_BASE_URL", "").strip()
    if provider == "openai" and not base:
        raise ConfigError(
            "TEAMBOT_API_BASE_URL",
            "the OpenAI-compatible server's base URL, e.g. http://127.0.0.1:8000/v1, "
            "is required with TEAMBOT_PROVIDER=openai",
        )
    return {
        "provider": provider,
        "api_base_url": url(env, "TEAMBOT_API_BASE_URL", "").rstrip("/") if base else "",
        "api_key": env.get("TEAMBOT_API_KEY", "").strip(),
        "api_flavor": flavor,
        "puter_auth_token": env.get("PUTER_AUTH_TOKEN", "").strip(),
        "puter_api_url": url(env, "PUTER_API_URL", "https://api.puter.com").rstrip("/"),
        "price_input": price(env, "TEAMBOT_PRICE_INPUT", 0.15),
        "price_output": price(env, "TEAMBOT_PRICE_OUTPUT", 0.60),
        "price_cached": price(env, "TEAMBOT_PRICE_CACHED", 0.015),
    }


def require_model_credentials(settings: Settings) -> None:
    """Raise ConfigError naming what the configured provider still needs to answer."""
    if settings.provider == "mistral" and not settings.mistral_api_key:
        raise ConfigError("MISTRAL_API_KEY", "your Mistral API key is required")
    if settings.provider == "puter" and not settings.puter_auth_token:
        raise ConfigError(
            "PUTER_AUTH_TOKEN", "a Puter auth token is required with TEAMBOT_PROVIDER=puter"
        )


LOG_FORMATS = ("text", "json")


def _ops_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """How the bot is watched: TEAMBOT_METRICS_PORT and TEAMBOT_LOG_FORMAT."""
    log_format = env.get("TEAMBOT_LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in LOG_FORMATS:
        raise ConfigError("TEAMBOT_LOG_FORMAT", f"text or json (got {log_format!r})")
    return {
        "metrics_port": optional_integer(env, "TEAMBOT_METRICS_PORT", 1, 65535),
        "log_format": log_format,
    }
