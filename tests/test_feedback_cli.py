"""`teambot feedback [--days N]` as a real subprocess, on votes stored through the engine."""

from __future__ import annotations

from bot.cli import SLACK_WORKSPACE_META
from bot.engine import Engine
from bot.types import Author, ConversationKey, ReplyDone
from tests.helpers import ALICE, BOB, collect, final, message
from tests.test_cli import cli_env, teambot

CAROL = Author("U3", "Carol")
DISCORD = ConversationKey("discord", "G1", "C1")
SLACK = ConversationKey("slack", "T1", "C2", "1700000000.000100")


async def _answered(engine: Engine, text: str, conv: ConversationKey) -> ReplyDone:
    done = final(await collect(engine, message(text, conv=conv)))
    assert isinstance(done, ReplyDone)
    return done


async def test_feedback_prints_votes_per_day_and_the_worst_answers_with_links(
    make_engine, fake_mistral, tmp_path
):
    engine = await make_engine(tmp_path / "cli.db")
    good = await _answered(engine, "good question", DISCORD)
    bad = await _answered(engine, "bad question", DISCORD)
    worse = await _answered(engine, "worse question", SLACK)
    await engine.answer_posted(bad.answer, "998877")
    await engine.answer_posted(worse.answer, "1700000001.000200")
    await engine.set_meta(SLACK_WORKSPACE_META, "https://acme.slack.com/")
    await engine.feedback(good.question, BOB, 1)
    await engine.feedback(good.question, CAROL, 1)
    await engine.feedback(bad.question, BOB, -1)
    await engine.feedback(bad.question, CAROL, 1)
    await engine.feedback(worse.question, BOB, -1)
    await engine.feedback(worse.question, ALICE, -1)
    await engine.aclose()

    code, out, err = await teambot(
        "feedback", "--days", "7", env=cli_env(None, tmp_path), cwd=tmp_path
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["day", "👍", "👎"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "3", "3"]
    title = lines.index("Worst-rated answers, last 7 days:")
    worst = lines[title + 1 :]
    assert len(worst) == 2  # the answer with only 👍 is not among them
    assert worst[0].startswith("-2 (0 👍 2 👎)")
    assert "https://acme.slack.com/archives/C2/p1700000001000200" in worst[0]
    assert "echo: worse question" in worst[0]
    assert worst[1].startswith("+0 (1 👍 1 👎)")
    assert "https://discord.com/channels/G1/C1/998877" in worst[1]


async def test_feedback_with_no_votes_and_a_bad_days_value(tmp_path):
    env = cli_env(None, tmp_path)
    code, out, _ = await teambot("feedback", env=env, cwd=tmp_path)
    assert code == 0
    assert "No answer got a 👎 in the last 30 days." in out
    code, _, err = await teambot("feedback", "--days", "0", env=env, cwd=tmp_path)
    assert code == 2 and "a whole number of days, 1 or more" in err
