"""Documents: PDFs and office files through Mistral OCR (or pypdf with TEAMBOT_OCR=off),
inlined with page numbers, cached by content hash, billed per page; on Discord and Slack
with the real clients, the fake Mistral's OCR endpoint and real PDF/DOCX bytes."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from typing import Any

import httpx
import pytest

from bot import tokens
from bot.config import load_settings
from bot.documents import DOCX, OCR_MODEL, PDF, PPTX, Pages, ReadFailed, inline, read_locally
from bot.engine import Engine
from bot.errors import ConfigError
from bot.store import Store
from tests.conftest import EngineFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc
from tests.fakes.discord.harness import Running, start_adapter
from tests.fakes.mistral import FakeMistral, text_of
from tests.fakes.mistral_files import FileError
from tests.fakes.slack import FakeSlack
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture
from tests.fakes.slack.harness import Harness
from tests.fixtures import media
from tests.test_store import place, store

pytestmark = pytest.mark.timeout(60)
__all__ = ["bot", "dc", "fake_slack_fixture", "place", "slack_fixture", "store"]  # fixtures

BOT = "<@UBOT>"
PAGES = [
    "The launch is planned for the ORANGE quarter after review by the whole team.",
    "Budget: the BANANA line holds forty thousand dollars for contractors and tools.",
    "Risks: the CHERRY vendor may deliver late, which would push the launch back.",
    "Appendix: the KIWI glossary lists every acronym used in the plan above.",
]


def last_prompt(fake: FakeMistral) -> str:
    return text_of(fake.requests[-1]["messages"][-1]["content"])


def ocr_document(fake: FakeMistral, n: int = -1) -> tuple[str, bytes]:
    """The MIME type and bytes of the n-th document sent to OCR."""
    url = fake.files.ocr_requests[n]["document"]["document_url"]
    head, _, data = url.partition(";base64,")
    return head.removeprefix("data:"), base64.b64decode(data)


async def ocr_totals(engine: Engine) -> tuple[int, float]:
    totals = await engine.store.usage_totals(kind="ocr")
    return totals.calls, totals.cost_usd


# The parts on their own


async def test_extracts_are_kept_by_key_on_every_backend(store: Store) -> None:
    assert await store.extract("abc:ocr") is None
    await store.save_extract("abc:ocr", "ocr", '{"pages": [], "total": 0}')
    await store.save_extract("def:ocr", "transcript", "other")
    assert await store.extract("abc:ocr") == '{"pages": [], "total": 0}'
    await store.save_extract("abc:ocr", "ocr", "replaced")
    assert await store.extract("abc:ocr") == "replaced"
    assert await store.extract("def:ocr") == "other"
    # Retention deletes them with the messages they were read for.
    await store.purge_older(time.time() + 1)
    assert await store.extract("abc:ocr") is None and await store.extract("def:ocr") is None


def test_local_extraction_reads_pdf_and_docx_and_spots_scans() -> None:
    text = read_locally(media.pdf(PAGES[:2]), PDF, 50)
    assert text.pages == ((1, PAGES[0]), (2, PAGES[1])) and text.total == 2
    assert not text.scanned
    capped = read_locally(media.pdf(PAGES), PDF, 3)
    assert [n for n, _ in capped.pages] == [1, 2, 3] and capped.total == 4
    scan = read_locally(media.scanned_pdf(3), PDF, 50)
    assert scan.scanned and scan.total == 3
    word = read_locally(media.docx(["First point", "Second point"]), DOCX, 50)
    assert word.pages == ((1, "First point\nSecond point"),) and not word.scanned
    slides = read_locally(_pptx(["Intro", "Plan", "Q&amp;A"]), PPTX, 2)
    assert slides.pages == ((1, "Intro"), (2, "Plan")) and slides.total == 3
    with pytest.raises(ReadFailed, match="damaged"):
        read_locally(b"%PDF-1.7 but nothing else", PDF, 50)


def _pptx(titles: list[str]) -> bytes:
    """Slides as PowerPoint keeps them: ppt/slides/slideN.xml with DrawingML text runs."""
    ns = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n, title in reversed(list(enumerate(titles, 1))):  # stored out of order
            slide = f"<p:sld {ns} xmlns:p='p'><a:p><a:r><a:t>{title}</a:t></a:r></a:p></p:sld>"
            archive.writestr(f"ppt/slides/slide{n}.xml", slide)
    return buffer.getvalue()


async def test_inline_numbers_pages_and_says_what_it_left_out() -> None:
    doc = Pages(
        tuple((n, f"{word} " * 60) for n, word in enumerate(["alpha", "beta", "gamma"], 1)), 9
    )
    first = tokens.count(f"--- page 1 ---\n{doc.pages[0][1]}")
    text, notes = await inline([("plan.pdf", doc)], budget=first + 5)
    assert "[Attached document: plan.pdf, 9 pages]" in text
    assert "--- page 1 ---" in text and "alpha" in text
    assert "beta" not in text and "gamma" not in text
    assert "[pages 2–3 left out: too long for one message]" in text
    assert notes == [
        "plan.pdf: pages 2–3 were left out (too long for one message).",
        "plan.pdf: only the first 3 of its 9 pages were read.",
    ]
    whole, none = await inline([("plan.pdf", Pages(doc.pages, 3))], budget=20_000)
    assert none == [] and all(w in whole for w in ("alpha", "beta", "gamma"))


def test_settings_names_defaults_and_errors() -> None:
    default = load_settings({})
    assert (default.ocr, default.doc_tokens, default.doc_pages, default.audio_seconds) == (
        True,
        20_000,
        50,
        600,
    )
    custom = load_settings(
        {
            "TEAMBOT_OCR": "off",
            "TEAMBOT_DOC_TOKENS": "5000",
            "TEAMBOT_DOC_PAGES": "10",
            "TEAMBOT_AUDIO_SECONDS": "120",
        }
    )
    assert (custom.ocr, custom.doc_tokens, custom.doc_pages, custom.audio_seconds) == (
        False,
        5000,
        10,
        120,
    )
    for name, bad in (
        ("TEAMBOT_OCR", "maybe"),
        ("TEAMBOT_DOC_TOKENS", "lots"),
        ("TEAMBOT_DOC_PAGES", "0"),
        ("TEAMBOT_AUDIO_SECONDS", "-5"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: bad})


async def test_fake_ocr_validates_requests_like_the_api(fake_mistral: FakeMistral) -> None:
    url = fake_mistral.base_url + "/ocr"
    data_url = "data:application/pdf;base64," + base64.b64encode(media.pdf(PAGES)).decode()
    document = {"type": "document_url", "document_url": data_url}
    async with httpx.AsyncClient() as client:

        async def post(body: Any) -> httpx.Response:
            return await client.post(url, json=body)

        extra = await post({"model": OCR_MODEL, "document": document, "colour": "red"})
        assert extra.status_code == 422 and "extra_forbidden" in extra.text
        assert (await post({"model": OCR_MODEL})).status_code == 422
        bad = {"type": "document_url", "document_url": "data:application/pdf;base64,@@"}
        assert (await post({"model": OCR_MODEL, "document": bad})).status_code == 400
        wrong_pages = {"model": OCR_MODEL, "document": document, "pages": "first"}
        assert (await post(wrong_pages)).status_code == 422
        good = await post({"model": OCR_MODEL, "document": document, "pages": "1-2"})
    assert good.status_code == 200
    body = good.json()
    assert [p["index"] for p in body["pages"]] == [1, 2]
    assert PAGES[1] in body["pages"][0]["markdown"]
    assert body["usage_info"]["pages_processed"] == 2


# On Discord


async def test_a_pdf_question_is_answered_from_its_pages(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral, engine: Engine
) -> None:
    blob = media.pdf(PAGES[:2])
    msg = await dc.user_message(
        dc.dm(dc.alice), dc.alice, "what is the budget?", attachments=[("plan.pdf", PDF, blob)]
    )
    text = await answer_to(bot, dc, msg)
    [request] = fake_mistral.files.ocr_requests
    assert request["model"] == OCR_MODEL and request["pages"] == "0-49"
    assert ocr_document(fake_mistral) == (PDF, blob)
    prompt = last_prompt(fake_mistral)
    assert prompt.startswith("what is the budget?")
    assert "--- page 1 ---" in prompt and "--- page 2 ---" in prompt
    assert "ORANGE" in prompt and "BANANA" in prompt
    assert "![img-" not in prompt  # the OCR's image placeholders are dropped
    assert "-#" not in text  # no note: everything was read
    assert await ocr_totals(engine) == (1, pytest.approx(2 * 0.004))


async def test_pages_over_the_caps_are_left_out_with_a_note(
    make_engine: EngineFactory, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    room = tokens.count(f"--- page 1 ---\n{PAGES[0]}") + 5  # one page fits
    engine = await make_engine(doc_pages=3, doc_tokens=room)
    running = await start_adapter(engine, dc)
    try:
        msg = await dc.user_message(
            dc.dm(dc.alice),
            dc.alice,
            "summarise",
            attachments=[("plan.pdf", PDF, media.pdf(PAGES))],
        )
        text = await answer_to(running, dc, msg)
    finally:
        await running.stop()
    assert fake_mistral.files.ocr_requests[0]["pages"] == "0-2"
    prompt = last_prompt(fake_mistral)
    assert "ORANGE" in prompt and "BANANA" not in prompt and "KIWI" not in prompt
    assert "-# plan.pdf: pages 2–3 were left out (too long for one message)." in text
    assert "-# plan.pdf: only the first 3 of its 4 pages were read." in text
    assert "summarise" in text  # the question is still answered


async def test_a_file_is_read_once_even_across_a_restart(
    make_engine: EngineFactory, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    blob = media.pdf(PAGES[:3])
    first = await make_engine()
    running = await start_adapter(first, dc)
    try:
        msg = await dc.user_message(
            dc.dm(dc.alice), dc.alice, "read this", attachments=[("plan.pdf", PDF, blob)]
        )
        await answer_to(running, dc, msg)
    finally:
        await running.stop()
    again = await make_engine()  # the same database file, a new store and engine
    running = await start_adapter(again, dc)
    try:
        msg = await dc.user_message(
            dc.dm(dc.bob), dc.bob, "and this?", attachments=[("copy.pdf", PDF, blob)]
        )
        await answer_to(running, dc, msg)
    finally:
        await running.stop()
    assert len(fake_mistral.files.ocr_requests) == 1
    assert "CHERRY" in last_prompt(fake_mistral)
    assert await ocr_totals(again) == (1, pytest.approx(3 * 0.004))


async def test_failed_ocr_is_one_note_and_the_question_is_answered(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral, engine: Engine
) -> None:
    fake_mistral.files.enqueue_ocr(FileError(500, {"object": "error", "message": "boom"}))
    blob = media.pdf(PAGES[:1])
    msg = await dc.user_message(
        dc.dm(dc.alice), dc.alice, "what's in it?", attachments=[("plan.pdf", PDF, blob)]
    )
    text = await answer_to(bot, dc, msg)
    notes = [line for line in text.splitlines() if line.startswith("-#")]
    assert notes == [
        "-# plan.pdf couldn't be read (the service answered HTTP 500); it was left out."
    ]
    assert "echo: what's in it?" in text and "ORANGE" not in last_prompt(fake_mistral)
    assert await ocr_totals(engine) == (0, 0.0)
    # Nothing was cached: the next question about the file tries again, and succeeds.
    again = await dc.user_message(
        dc.dm(dc.alice), dc.alice, "try again", attachments=[("plan.pdf", PDF, blob)]
    )
    assert "ORANGE" in await answer_to(bot, dc, again)
    assert len(fake_mistral.files.ocr_requests) == 2


async def test_ocr_off_reads_text_pdfs_locally_and_notes_scans(
    make_engine: EngineFactory, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    engine = await make_engine(ocr=False)
    running = await start_adapter(engine, dc)
    try:
        text_pdf = await dc.user_message(
            dc.dm(dc.alice), dc.alice, "read", attachments=[("plan.pdf", PDF, media.pdf(PAGES))]
        )
        answer = await answer_to(running, dc, text_pdf)
        assert "-#" not in answer and "KIWI" in last_prompt(fake_mistral)
        scan = await dc.user_message(
            dc.dm(dc.alice),
            dc.alice,
            "and the scan?",
            attachments=[("scan.pdf", PDF, media.scanned_pdf(2))],
        )
        answer = await answer_to(running, dc, scan)
    finally:
        await running.stop()
    assert fake_mistral.files.ocr_requests == []  # no file left for OCR
    assert "-# scan.pdf looks scanned (it has no text layer); reading it needs OCR" in answer
    assert "echo: and the scan?" in answer
    assert await ocr_totals(engine) == (0, 0.0)


# On Slack


async def test_slack_pdf_and_docx_are_read(slack: Harness, fake_mistral: FakeMistral) -> None:
    pdf = slack.fake.add_file("plan.pdf", PDF, media.pdf(PAGES[:2]))
    word = slack.fake.add_file("notes.docx", DOCX, media.docx(["Ship on FRIDAY", "Tell SALES"]))
    ts = slack.fake.user_message("U1", "C1", f"{BOT} compare these", files=[pdf, word])
    text = await slack.reply_in("C1", ts)
    assert [ocr_document(fake_mistral, n)[0] for n in (0, 1)] == [PDF, DOCX]
    prompt = last_prompt(fake_mistral)
    assert "[Attached document: plan.pdf, 2 pages]" in prompt and "BANANA" in prompt
    assert "[Attached document: notes.docx]" in prompt and "FRIDAY" in prompt
    assert ":warning:" not in text
    totals = await slack.engine.store.usage_totals(kind="ocr")
    assert totals.calls == 2 and totals.cost_usd == pytest.approx(3 * 0.004)


async def test_slack_failed_ocr_and_local_scan_are_notes(
    fake_slack: FakeSlack, make_engine: EngineFactory, fake_mistral: FakeMistral
) -> None:
    fake_mistral.files.enqueue_ocr(FileError(400, {"object": "error", "message": "bad file"}))
    harness = Harness(fake_slack, await make_engine())
    await harness.start()
    try:
        pdf = fake_slack.add_file("plan.pdf", PDF, media.pdf(PAGES[:1]))
        ts = fake_slack.user_message("U1", "D1", "what is it?", files=[pdf])
        await harness.reply_in("D1", ts)
        [note, answer] = [m.visible for m in harness.replies("D1", ts)]
    finally:
        await harness.stop()
    assert note == (
        ":warning: plan.pdf couldn't be read (the service refused it with HTTP 400: bad file); "
        "it was left out."
    )
    assert answer.startswith("echo: what is it?")
    local = Harness(fake_slack, await make_engine(ocr=False))
    await local.start()
    try:
        scan = fake_slack.add_file("scan.pdf", PDF, media.scanned_pdf(1))
        ts = fake_slack.user_message("U1", "D1", "and this?", files=[scan])
        await local.reply_in("D1", ts)
        [note, answer] = [m.visible for m in local.replies("D1", ts)]
    finally:
        await local.stop()
    assert note.startswith(":warning: scan.pdf looks scanned") and "echo: and this?" in answer
    assert len(fake_mistral.files.ocr_requests) == 1
