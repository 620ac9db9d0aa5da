"""Text that enters through the engine's other doors (edits, command arguments) is
repaired like message text (bot/text.py): a lone surrogate never reaches the store."""

from __future__ import annotations

from bot.types import Author
from tests.helpers import collect, message


async def test_an_edit_with_a_lone_surrogate_is_stored_repaired(engine):
    question = message("first version")
    await collect(engine, question)
    assert await engine.edit(question.key, question.id, "second \ud800 version")
    rows = await engine.store.messages(str(question.key))
    assert rows[0].text == "second \ufffd version"


async def test_command_arguments_with_a_lone_surrogate_are_repaired(engine):
    key = message("x").key
    author = Author("U1", "Alice")
    await engine.command(key, author, "system", "Answer in \udcff French.", is_group=False)
    settings = await engine.conversation_settings(key)
    assert settings.system == "Answer in \ufffd French."
