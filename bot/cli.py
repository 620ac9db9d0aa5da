"""The `teambot` command: run, chat, check, usage, export, forget, audit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time

from bot import __version__, breaker, logs, metrics
from bot.app import Config, adapters, load_config, open_engine
from bot.config import Settings, environment, require_model_credentials
from bot.errors import ConfigError, ModelError
from bot.providers import endpoint, model_client, provider_report
from bot.store import AuditEntry, Store, UsageTotals
from bot.text import usd
from bot.tools import Links

log = logging.getLogger("teambot")

NO_PLATFORM = (
    "teambot: no chat platform is configured. Set DISCORD_BOT_TOKEN for Discord, and/or "
    "SLACK_BOT_TOKEN plus SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP) for "
    "Slack. To try the bot in a terminal, run `teambot chat`."
)
SHUTDOWN_GRACE = 6.0  # in-flight replies get this long; adapters 2 s more; all within 10 s
ADAPTER_CLOSE_TIMEOUT = 2.0
CHECK_TIMEOUT = 5.0  # seconds for `teambot check`'s one model request
# The Slack workspace's address (https://x.slack.com/), which the Slack adapter keeps in
# the store's meta at start-up so `teambot feedback` can build links offline.
SLACK_WORKSPACE_META = "slack:workspace_url"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teambot", description="Mistral Small 4 for Discord and Slack teams."
    )
    parser.add_argument("--version", action="version", version=f"teambot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="start every configured chat platform adapter")
    sub.add_parser("chat", help="talk to the bot in this terminal")
    sub.add_parser("check", help="validate configuration and reach the model once")
    usage = sub.add_parser("usage", help="token and cost table from the store")
    usage.add_argument("--days", type=int, default=30, help="how far back (default 30)")
    export = sub.add_parser("export", help="print as JSON everything stored about a person")
    export.add_argument("--user", required=True, type=_user_id, help="their platform user id")
    export.add_argument("--platform", help="only this platform (default: every platform)")
    forget = sub.add_parser("forget", help="delete what a person wrote, and their DMs")
    forget.add_argument("--user", required=True, type=_user_id, help="their platform user id")
    forget.add_argument("--platform", required=True, help="the platform (discord, slack, ...)")
    feedback = sub.add_parser("feedback", help="👍/👎 per day and the worst-rated answers")
    feedback.add_argument("--days", type=_days, default=30, help="how far back (default 30)")
    audit = sub.add_parser("audit", help="the admin actions on record")
    audit.add_argument("--days", type=_days, default=30, help="how far back (default 30)")
    manifest = sub.add_parser("manifest", help="print a platform's app manifest")
    manifest.add_argument("platform", choices=["slack"], help="the platform (slack)")
    migrate = sub.add_parser("migrate", help="copy the SQLite database into PostgreSQL")
    migrate.add_argument("--to", required=True, help="the target, postgresql://...")
    return parser


def _user_id(raw: str) -> str:
    if not raw.strip():
        raise argparse.ArgumentTypeError("a platform user id")
    return raw.strip()


def _days(raw: str) -> int:
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError(f"a whole number of days, 1 or more (got {raw!r})")
    return days


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    if args.command == "manifest":
        return _manifest(args.platform)
    try:
        config = load_config()
        if args.command in ("run", "chat", "check"):
            require_model_credentials(config.core)
    except ConfigError as exc:
        print(f"teambot: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.core.log_level, config.secrets())
    if args.command == "run" and not config.platforms:
        print(NO_PLATFORM, file=sys.stderr)
        return 2
    try:
        if args.command == "usage":
            return asyncio.run(_usage(config.core, args.days))
        if args.command == "migrate":
            from bot import migrate

            return asyncio.run(migrate.main(config.core.database_url, args.to))
        if args.command == "feedback":
            return asyncio.run(_feedback(config.core, args.days))
        if args.command in ("export", "forget", "audit"):
            return asyncio.run(_people(config.core, args))
        if args.command == "check":
            return asyncio.run(_check(config))
        return asyncio.run(_run(config) if args.command == "run" else _chat(config.core))
    except ConfigError as exc:  # found only when used: DATABASE_URL, a refused token
        print(f"teambot: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _manifest(platform: str) -> int:
    from adapters.slack.manifest import manifest

    del platform  # argparse allows only "slack"
    sys.stdout.write(manifest())
    return 0


async def _run(config: Config) -> int:
    logs.setup(config.core.log_level, config.secrets(), config.core.log_format)
    engine = await open_engine(config.core)
    platforms = adapters(engine, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(adapter.run()) for adapter in platforms]
    tasks += metrics.serving(config.core.metrics_port, platforms, engine.store)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    crashed = [t for t in done if t is not stopper and t.exception() is not None]
    refused = next((e for t in crashed if isinstance(e := t.exception(), ConfigError)), None)
    for task in crashed:
        if task.exception() is not refused:
            log.error("an adapter stopped: %s", task.exception())
    if refused is None:  # a refused token is said in one line (main), nothing else
        log.info("shutting down: finishing in-flight replies")
    await engine.shutdown(grace=SHUTDOWN_GRACE)
    for adapter in platforms:
        with contextlib.suppress(Exception, TimeoutError):
            await asyncio.wait_for(adapter.close(), ADAPTER_CLOSE_TIMEOUT)
    for task in [*tasks, stopper]:
        task.cancel()
    await asyncio.gather(*tasks, stopper, return_exceptions=True)
    await engine.aclose()
    if refused is not None:
        raise refused  # a token the platform refused at start-up: one line, exit 2 (main)
    return 1 if crashed else 0


async def _chat(settings: Settings) -> int:
    from adapters.console import ConsoleAdapter

    if sys.stdin.isatty() and "TEAMBOT_LOG_LEVEL" not in environment():
        # The conversation shares the terminal with stderr: only what needs attention.
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    engine = await open_engine(settings)
    try:
        await ConsoleAdapter(engine).run()
    finally:
        await engine.aclose()
    return 0


async def _check(config: Config) -> int:
    from bot.store import open_store

    settings = config.core
    ok = True
    print(f"✓ configuration: model {settings.model}, context budget {settings.context_tokens:,}")
    store = await open_store(settings.database_url)  # ConfigError: one line, exit 2
    await store.aclose()
    print(f"✓ store: {settings.database_url}")
    # One attempt with a short timeout: a model that is down is reported in seconds.
    client = model_client(settings, connect_timeout=CHECK_TIMEOUT)
    try:
        print(f"✓ model: {await client.check(retry=False, within=CHECK_TIMEOUT)}")
    except ModelError as exc:
        ok = False
        print(f"✗ model at {endpoint(settings)}: {exc.user_message} ({exc})")
    finally:
        await client.aclose()
    print(await breaker.check_line(settings.metrics_port))
    for line in provider_report(settings, client):
        print(line)
    for name, state in config.status().items():
        print(f"{'✓' if 'not' not in state else '-'} {name}: {state}")
    if settings.mcp_servers:
        ok = await _check_mcp(settings) and ok
    return 0 if ok else 1


async def _check_mcp(settings: Settings) -> bool:
    """Connect to each MCP server once and list its tools, or say why it failed."""
    from bot.tools.mcp_servers import McpServers

    servers = McpServers(list(settings.mcp_servers))
    servers.start()
    try:
        await servers.wait_ready(timeout=15.0)
        statuses = servers.status()
    finally:
        await servers.aclose()
    for status in statuses:
        if status.state == "connected":
            names = ", ".join(status.tools) or "no tools"
            print(f"✓ MCP {status.name} ({status.transport}): {names}")
        else:
            print(f"✗ MCP {status.name} ({status.transport}): {status.error or status.state}")
    return all(status.state == "connected" for status in statuses)


def _usage_line(day: str, platform: str, user: str, totals: UsageTotals) -> str:
    return (
        f"{day:<10}  {platform:<8}  {user[:22]:<22}  {totals.calls:>7,}  "
        f"{totals.prompt_tokens:>10,}  {totals.cached_share:>7.0%}  "
        f"{totals.completion_tokens:>9,}  {usd(totals.cost_usd):>9}"
    )


async def _usage(settings: Settings, days: int) -> int:
    from bot.store import open_store

    store = await open_store(settings.database_url)
    try:
        rows = await store.usage_rows(since=time.time() - days * 86_400)
    finally:
        await store.aclose()
    header = (
        f"{'day':<10}  {'platform':<8}  {'user':<22}  {'calls':>7}  "
        f"{'in':>10}  {'cached':>7}  {'out':>9}  {'cost $':>9}"
    )
    rule = "-" * len(header)
    print(header, rule, sep="\n")
    for row in rows:
        print(_usage_line(row.day, row.platform, row.user_id, row.totals))
    total = UsageTotals(
        sum(r.totals.calls for r in rows),
        sum(r.totals.prompt_tokens for r in rows),
        sum(r.totals.completion_tokens for r in rows),
        sum(r.totals.cost_usd for r in rows),
        sum(r.totals.cached_tokens for r in rows),
    )
    print(rule, _usage_line("total", "", f"last {days} days", total), sep="\n")
    return 0


async def _feedback(settings: Settings, days: int) -> int:
    from bot.control import feedback_lines
    from bot.store import open_store

    store = await open_store(settings.database_url)
    try:
        links = await _links(store)
        for line in await feedback_lines(store, days, links):
            print(line)
    finally:
        await store.aclose()
    return 0


async def _links(store: Store) -> dict[str, Links]:
    """Each platform's message links, as far as they can be built without connecting:
    Discord's always; Slack's from the workspace address its adapter keeps in `meta`."""
    from adapters.discord.links import DiscordLinks
    from adapters.slack.links import SlackLinks

    links: dict[str, Links] = {"discord": DiscordLinks()}
    workspace = await store.get_meta(SLACK_WORKSPACE_META)
    if workspace:
        links["slack"] = SlackLinks("", workspace)
    return links


async def _people(settings: Settings, args: argparse.Namespace) -> int:
    """export, forget and audit: each on the store named by DATABASE_URL."""
    from bot.store import open_store

    store = await open_store(settings.database_url)
    try:
        if args.command == "export":
            return await _export(store, args.platform, args.user)
        if args.command == "forget":
            return await _forget(store, args.platform, args.user)
        return await _audit(store, args.days)
    finally:
        await store.aclose()


async def _export(store: Store, platform: str | None, user: str) -> int:
    exported = await store.export_user(platform, user)
    print(json.dumps(exported, indent=2, ensure_ascii=False))
    where = f"on {platform}" if platform else "on every platform"
    detail = f"user {user} {where}: {len(exported['messages'])} messages"
    await store.add_audit(AuditEntry(platform or "", "shell", "export", detail))
    return 0


async def _forget(store: Store, platform: str, user: str) -> int:
    deleted = await store.forget_user(platform, user)
    await store.add_audit(
        AuditEntry(platform, "shell", "forget", f"user {user}: {deleted} messages")
    )
    print(f"Forgot {deleted} messages of {user} on {platform}.")
    return 0


def _audit_line(when: str, platform: str, actor: str, action: str, detail: str) -> str:
    return f"{when:<19}  {platform:<8}  {actor[:22]:<22}  {action:<8}  {detail}"


async def _audit(store: Store, days: int) -> int:
    entries = await store.audit_entries(since=time.time() - days * 86_400)
    header = _audit_line("time (UTC)", "platform", "actor", "action", "detail")
    print(header, "-" * len(header), sep="\n")
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created_at or 0.0))
        detail = " ".join(entry.detail.split())  # one line each, whatever the detail holds
        print(_audit_line(when, entry.platform, entry.actor, entry.action, detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
