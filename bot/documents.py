"""Documents people attach (PDF, DOCX, PPTX), read into page-numbered text for the prompt.

With OCR on (the default) a file goes to Mistral's OCR endpoint (`POST /v1/ocr`, the
bytes in a base64 `data:` URL, since platform file URLs expire or need a token), asking
only for the first TEAMBOT_DOC_PAGES pages. With TEAMBOT_OCR=off nothing leaves: PDFs
are read with pypdf and office files from their XML, and a scanned PDF gets a note that
it needs OCR. OCR results are kept in the store under the file's sha256, so a second
question about the same file, or a restart, costs nothing; each OCR call's pages are
billed in the usage table (kind "ocr"). `inline` lays the pages into the message text
within TEAMBOT_DOC_TOKENS and says which pages it had to leave out.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from xml.etree import ElementTree

import httpx

from bot import tokens
from bot.accounting import Accounts, ocr_cost_usd
from bot.store import Store
from bot.types import ConversationKey

log = logging.getLogger("teambot.documents")

OCR_MODEL = "mistral-ocr-latest"
OCR_TIMEOUT = 180.0  # seconds; a 50-page scan takes a while
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024  # what the OCR endpoint accepts per document
MIN_CHARS_PER_PAGE = 20  # fewer non-space characters per page: a scan without a text layer
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
DOCUMENT_TYPES = {".pdf": PDF, ".docx": DOCX, ".pptx": PPTX}
_IMAGE_PLACEHOLDER = re.compile(r"!\[[^\]]*\]\([^)]*\)\n?")
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_SLIDE = re.compile(r"ppt/slides/slide(\d+)\.xml")


class ReadFailed(Exception):
    """A file could not be read; `str()` is a short reason fit for a note."""


def document_type(name: str, mime: str) -> str | None:
    """The document MIME type a file is, by name or declared type; None if not a document."""
    declared = mime.split(";")[0].strip().lower()
    if declared in DOCUMENT_TYPES.values():
        return declared
    return DOCUMENT_TYPES.get(PurePosixPath(name.lower()).suffix)


@dataclass(frozen=True)
class Pages:
    """What was read from one file: its pages' text, numbered from 1, and its page count."""

    pages: tuple[tuple[int, str], ...]
    total: int  # pages in the whole file; 0 when that cannot be told (a DOCX has no pages)
    scanned: bool = False  # read locally, and no text layer was found

    def dumps(self) -> str:
        return json.dumps({"pages": [list(p) for p in self.pages], "total": self.total})

    @classmethod
    def loads(cls, raw: str) -> Pages:
        data = json.loads(raw)
        return cls(tuple((int(n), str(t)) for n, t in data["pages"]), int(data["total"]))


# Talking to Mistral (shared with bot/audio.py)


async def call_api(url: str, api_key: str, seconds: float, **request: Any) -> dict[str, Any]:
    """POST to a Mistral endpoint once; any failure is a `ReadFailed` with a short reason."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(seconds, connect=10.0)) as client:
            response = await client.post(url, headers=headers, **request)
    except httpx.TimeoutException:
        raise ReadFailed("the service took too long") from None
    except httpx.HTTPError as exc:
        raise ReadFailed(f"the service could not be reached ({type(exc).__name__})") from None
    if response.status_code in (401, 403):
        raise ReadFailed("the API key was refused")
    if response.status_code == 429:
        raise ReadFailed("the service is rate limited right now")
    if response.status_code >= 500:
        raise ReadFailed(f"the service answered HTTP {response.status_code}")
    if response.status_code != 200:
        raise ReadFailed(f"the service refused it with HTTP {response.status_code}{_why(response)}")
    try:
        body = response.json()
    except ValueError:
        raise ReadFailed("the service sent an unreadable answer") from None
    if not isinstance(body, dict):
        raise ReadFailed("the service sent an unreadable answer")
    return body


def _why(response: httpx.Response) -> str:
    """The API's own message, short, when it sent one."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        return ""
    if isinstance(message, str) and message.strip():
        return ": " + message.strip().splitlines()[0][:120]
    return ""


class OcrClient:
    """Mistral's OCR endpoint: a document in, its pages' markdown out."""

    def __init__(self, base_url: str, api_key: str, timeout: float = OCR_TIMEOUT) -> None:
        self.url = base_url.rstrip("/") + "/ocr"
        self.api_key = api_key
        self.timeout = timeout

    async def read(self, data: bytes, mime: str, max_pages: int) -> tuple[list[str], int]:
        """The first `max_pages` pages' markdown in page order, and the pages billed."""
        encoded = base64.b64encode(data).decode("ascii")
        body = {
            "model": OCR_MODEL,
            "document": {"type": "document_url", "document_url": f"data:{mime};base64,{encoded}"},
            "pages": f"0-{max_pages - 1}",  # 0-based and inclusive
            "include_image_base64": False,
        }
        answer = await call_api(self.url, self.api_key, self.timeout, json=body)
        pages = answer.get("pages")
        if not isinstance(pages, list):
            raise ReadFailed("the service sent an unreadable answer")
        ordered = sorted(
            (p for p in pages if isinstance(p, dict) and isinstance(p.get("index"), int)),
            key=lambda p: int(p["index"]),
        )
        texts = [_IMAGE_PLACEHOLDER.sub("", str(p.get("markdown") or "")).strip() for p in ordered]
        usage = answer.get("usage_info") or {}
        processed = usage.get("pages_processed") if isinstance(usage, dict) else None
        return texts, processed if isinstance(processed, int) else len(texts)


# Reading locally (TEAMBOT_OCR=off, and counting a PDF's pages)


def page_count(data: bytes, mime: str) -> int:
    """How many pages (slides) the file has, 0 when that cannot be told cheaply."""
    try:
        if mime == PDF:
            from pypdf import PdfReader

            return len(PdfReader(io.BytesIO(data)).pages)
        if mime == PPTX:
            return len(_slides(zipfile.ZipFile(io.BytesIO(data))))
    except Exception:  # a file pypdf cannot parse may still be read by OCR
        return 0
    return 0


def read_locally(data: bytes, mime: str, max_pages: int) -> Pages:
    """Text-only extraction; raises ReadFailed for files it cannot open."""
    try:
        if mime == PDF:
            return _read_pdf(data, max_pages)
        archive = zipfile.ZipFile(io.BytesIO(data))
        if mime == DOCX:
            return Pages(((1, _docx_text(archive)),), 0)
        slides = _slides(archive)
        texts = [_pptx_text(archive, name) for name in slides[:max_pages]]
        return Pages(tuple(enumerate(texts, 1)), len(slides))
    except ReadFailed:
        raise
    except Exception as exc:  # pypdf, zipfile and XML errors alike: the file is damaged
        log.info("local extraction failed: %s: %s", type(exc).__name__, exc)
        raise ReadFailed("it could not be opened; it may be damaged") from None


def _read_pdf(data: bytes, max_pages: int) -> Pages:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise ReadFailed("it is password-protected")
    total = len(reader.pages)
    texts = [reader.pages[i].extract_text() or "" for i in range(min(total, max_pages))]
    found = sum(len("".join(t.split())) for t in texts)
    scanned = bool(texts) and found < MIN_CHARS_PER_PAGE * len(texts)
    return Pages(tuple(enumerate((t.strip() for t in texts), 1)), total, scanned)


def _docx_text(archive: zipfile.ZipFile) -> str:
    root = ElementTree.fromstring(archive.read("word/document.xml"))
    paragraphs = ("".join(t.text or "" for t in p.iter(f"{_W}t")) for p in root.iter(f"{_W}p"))
    return "\n".join(p for p in paragraphs if p.strip())


def _slides(archive: zipfile.ZipFile) -> list[str]:
    found = [(int(m.group(1)), n) for n in archive.namelist() if (m := _SLIDE.fullmatch(n))]
    return [name for _, name in sorted(found)]


def _pptx_text(archive: zipfile.ZipFile, name: str) -> str:
    root = ElementTree.fromstring(archive.read(name))
    paragraphs = ("".join(t.text or "" for t in p.iter(f"{_A}t")) for p in root.iter(f"{_A}p"))
    return "\n".join(p for p in paragraphs if p.strip())


# The service the attachments step uses


class Documents:
    """Reads documents once: by OCR (cached by content hash, billed) or locally."""

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        ocr: OcrClient | None,
        max_pages: int,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.ocr = ocr  # None: TEAMBOT_OCR=off
        self.max_pages = max_pages

    async def read(self, data: bytes, mime: str, key: ConversationKey, user_id: str) -> Pages:
        if self.ocr is None:
            return await asyncio.to_thread(read_locally, data, mime, self.max_pages)
        cache_key = f"{hashlib.sha256(data).hexdigest()}:{OCR_MODEL}:{self.max_pages}"
        cached = await self.store.extract(cache_key)
        if cached is not None:
            return Pages.loads(cached)
        total = await asyncio.to_thread(page_count, data, mime)
        started = time.perf_counter()
        texts, billed = await self.ocr.read(data, mime, self.max_pages)
        elapsed_ms = (time.perf_counter() - started) * 1000
        pages = Pages(tuple(enumerate(texts, 1)), total)
        await asyncio.gather(
            self.store.save_extract(cache_key, "ocr", pages.dumps()),
            self.accounts.record_file(
                key, user_id, "ocr", OCR_MODEL, ocr_cost_usd(billed), elapsed_ms
            ),
        )
        log.info("OCR of %d pages in %s: %.0f ms", billed, key, elapsed_ms)
        return pages


# Into the prompt


def _span(numbers: Sequence[int]) -> str:
    first, last = numbers[0], numbers[-1]
    return f"page {first}" if first == last else f"pages {first}–{last}"


async def inline(documents: Sequence[tuple[str, Pages]], budget: int) -> tuple[str, list[str]]:
    """The documents' pages as text for the message, within `budget` tokens in all, and
    notes for the people asking about pages that were not read or were left out."""
    blocks: list[str] = []
    notes: list[str] = []
    left = budget
    for name, doc in documents:
        kept: list[str] = []
        dropped: list[int] = []
        for number, text in doc.pages:
            block = f"--- page {number} ---\n{text}" if doc.total != 0 else text
            cost = await tokens.count_async(block)
            if dropped or cost > left:
                dropped.append(number)
                continue
            kept.append(block)
            left -= cost
        read = len(doc.pages)
        pages = f", {doc.total} pages" if doc.total else ""
        body = "\n\n".join(kept)
        if dropped:
            body += f"\n\n[{_span(dropped)} left out: too long for one message]"
            were = "was" if len(dropped) == 1 else "were"
            notes.append(f"{name}: {_span(dropped)} {were} left out (too long for one message).")
        if doc.total > read:
            body += f"\n\n[only the first {read} of {doc.total} pages were read]"
            notes.append(f"{name}: only the first {read} of its {doc.total} pages were read.")
        blocks.append(f"\n\n[Attached document: {name}{pages}]\n{body}\n[End of {name}]")
    return "".join(blocks), notes
