"""Markdown splitting, attachment policy, config parsing and log redaction."""

from __future__ import annotations

import logging

import pytest

from adapters.discord import settings as discord_settings
from adapters.slack import settings as slack_settings
from bot.app import load_config
from bot.attachments import MAX_IMAGES, Attachment, prepare
from bot.config import load_settings
from bot.delivery.split import open_fence, split_markdown
from bot.errors import ConfigError
from bot.logs import RedactingFormatter
from tests.fixtures import media

PNG = media.png()  # a real image: images are decoded before they are sent


def test_short_text_is_one_chunk():
    assert split_markdown("hello", 2000) == ["hello"]


def test_split_prefers_paragraphs_then_lines_then_words():
    para = "a" * 900
    chunks = split_markdown(f"{para}\n\n{para}\n\n{para}", 2000)
    assert chunks == [f"{para}\n\n{para}", para]
    words = " ".join(["word"] * 1000)
    for chunk in split_markdown(words, 500):
        assert len(chunk) <= 500 and not chunk.startswith(" ") and "wor d" not in chunk
        assert set(chunk.split()) == {"word"}


def test_code_block_cut_is_closed_and_reopened_with_language():
    code = "\n".join(f"    value_{i} = compute({i})" for i in range(300))
    text = f"Here you go:\n\n```python\n{code}\n```\n\nThat's all."
    chunks = split_markdown(text, 2000)
    assert len(chunks) > 2
    for chunk in chunks:
        assert len(chunk) <= 2000
        assert open_fence(chunk) is None  # every message renders on its own
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n")
    rebuilt = "\n".join(
        line for c in chunks for line in c.split("\n") if line.strip() not in ("```", "```python")
    )
    assert all(f"value_{i} = compute({i})" in rebuilt for i in range(300))
    assert "    value_150" in rebuilt  # indentation survives the cut


def test_unbreakable_text_is_hard_cut():
    chunks = split_markdown("x" * 4500, 2000)
    assert [len(c) for c in chunks] == [1992, 1992, 516]


def test_fence_detection_ignores_inline_backticks():
    assert open_fence("use ```inline``` here") is None
    assert open_fence("```js\nlet a") == "```js"
    assert open_fence("~~~\ncode\n~~~") is None


def attachment(name: str, mime: str, data: bytes) -> Attachment:
    async def fetch() -> bytes:
        return data

    return Attachment(name, mime, len(data), fetch)


async def test_images_and_text_files_are_prepared():
    source = "def f():\n    return '```'\n"
    result = await prepare(
        [
            attachment("shot.png", "image/png", PNG),
            attachment("main.py", "", source.encode()),
            attachment("archive.zip", "application/zip", b"PK\x03\x04"),
        ]
    )
    assert [i.mime for i in result.images] == ["image/png"]
    assert "[Attached file: main.py]" in result.text and "````" in result.text
    assert result.notes == ["archive.zip can't be read by the model (only images and text files)."]
    assert [m.name for m in result.meta] == ["shot.png", "main.py", "archive.zip"]


async def test_login_page_instead_of_image_is_reported():
    page = b"<!DOCTYPE html><html><body>Sign in to Slack</body></html>"
    result = await prepare([attachment("photo.jpg", "image/jpeg", page)])
    assert result.images == ()
    assert result.notes == ["photo.jpg came back as a login page, not an image; left out."]


async def test_image_count_and_size_caps():
    many = [attachment(f"{n}.png", "image/png", PNG) for n in range(MAX_IMAGES + 2)]
    result = await prepare(many)
    assert len(result.images) == MAX_IMAGES and len(result.notes) == 2

    async def never() -> bytes:
        raise AssertionError("an oversized image must not be downloaded")

    huge = await prepare([Attachment("big.png", "image/png", 11 * 1024 * 1024, never)])
    assert huge.images == () and "too large" in huge.notes[0]


async def test_failed_download_becomes_a_note():
    async def broken() -> bytes:
        raise OSError("connection reset")

    result = await prepare([Attachment("notes.txt", "text/plain", 10, broken)])
    assert result.notes == ["Couldn't download notes.txt; it was left out."]


async def test_long_text_file_is_cut_with_a_note():
    result = await prepare([attachment("log.txt", "text/plain", b"y" * 50_000)])
    assert "cut to its first 40,000 characters" in result.notes[0]
    assert result.text.count("y") == 40_000


def test_settings_defaults_and_contract_names():
    settings = load_settings({"MISTRAL_API_KEY": "k"})
    assert settings.model == "mistral-small-2603"
    assert settings.mistral_base_url == "https://api.mistral.ai/v1"
    assert (settings.context_tokens, settings.max_output_tokens) == (32_000, 4096)
    assert settings.database_url == "sqlite:///./teambot.db"
    assert load_config({"MISTRAL_API_KEY": "k"}).platforms == {}
    env = {
        "TEAMBOT_ADMIN_IDS": "U1, 42 ,",
        "TEAMBOT_REASONING": "HIGH",
        "DISCORD_BOT_TOKEN": "abc",
        "DISCORD_GUILD_IDS": "1,2",
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "TEAMBOT_SLACK_PORT": "3100",
    }
    full = load_settings(env)
    assert full.admin_ids == {"U1", "42"} and full.reasoning
    discord, slack = discord_settings.load(env), slack_settings.load(env)
    assert discord and discord.guild_ids == (1, 2)
    assert slack and not slack.socket_mode and slack.port == 3100


def test_context_budget_capped_below_window_minus_output():
    with pytest.raises(ConfigError, match="TEAMBOT_CONTEXT_TOKENS"):
        load_settings({"TEAMBOT_MAX_OUTPUT_TOKENS": "100000", "TEAMBOT_CONTEXT_TOKENS": "200000"})
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        load_config({"SLACK_BOT_TOKEN": "xoxp-user", "SLACK_APP_TOKEN": "xapp-1"})


def test_log_lines_never_carry_secrets():
    formatter = RedactingFormatter("%(message)s", ["sk-configured-secret"])
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "key %s slack %s header %s", None, None
    )
    record.args = ("sk-configured-secret", "xoxb-123-456-abc", "Authorization: Bearer abcdefghijk")
    line = formatter.format(record)
    assert (
        "sk-configured-secret" not in line and "xoxb-123" not in line and "abcdefghijk" not in line
    )
    assert line.count("[redacted]") == 3
