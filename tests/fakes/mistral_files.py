"""The fake Mistral's file endpoints: OCR (`POST /v1/ocr`) and transcription
(`POST /v1/audio/transcriptions`), validating requests as Mistral's API does and
answering with its response shapes.

OCR reads the document it is sent: a PDF's pages through pypdf (a page without a text
layer comes back as "Scanned text of page N", standing in for what real OCR would
read), a DOCX's paragraphs as one page. Transcription answers "(transcript of NAME)"
unless scripted, and bills an Ogg file by its real length (granule position). Tests
script either endpoint with `enqueue_ocr` / `enqueue_transcription` (a `Transcription`
or an `Error`); a request rejected by validation consumes nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from aiohttp import web

OCR_FIELDS = frozenset(
    {
        *("model", "id", "document", "pages", "include_image_base64", "image_limit"),
        *("image_min_size", "bbox_annotation_format", "document_annotation_format"),
        *("document_annotation_prompt", "table_format", "extract_header", "extract_footer"),
        *("include_blocks", "confidence_scores_granularity"),
    }
)
TRANSCRIPTION_FIELDS = frozenset(
    {
        *("model", "file", "file_url", "file_id", "language", "temperature", "stream"),
        *("timestamp_granularities", "diarize", "context_bias"),
    }
)
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
PAGES_SPEC = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
DATA_URL = re.compile(r"^data:([\w.+/-]+);base64,(.*)$", re.DOTALL)
OCR_MODEL_ANSWERED = "mistral-ocr-2512"
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


@dataclass(frozen=True)
class Transcription:
    text: str
    seconds: float | None = None  # None: the file's own length (Ogg), else 1 s


@dataclass(frozen=True)
class FileError:
    status: int
    body: dict[str, Any]


def _error(message: Any, status: int, type_: str = "invalid_request_error") -> web.Response:
    body = {"object": "error", "message": message, "type": type_, "param": None, "code": None}
    return web.json_response(body, status=status)


def _extra(keys: list[str]) -> web.Response:
    detail = [
        {"type": "extra_forbidden", "loc": ["body", k], "msg": "Extra inputs are not permitted"}
        for k in keys
    ]
    return _error({"detail": detail}, 422)


def _missing(key: str) -> web.Response:
    return _error(
        {"detail": [{"type": "missing", "loc": ["body", key], "msg": "Field required"}]}, 422
    )


def wanted_pages(spec: Any, count: int) -> list[int] | None:
    """The 0-based page indexes `spec` asks for (None: malformed)."""
    if spec is None:
        return list(range(count))
    found: set[int] = set()
    if isinstance(spec, list):
        if not all(isinstance(i, int) and i >= 0 for i in spec):
            return None
        found.update(spec)
    elif isinstance(spec, str) and PAGES_SPEC.match(spec):
        for part in spec.split(","):
            low, _, high = part.partition("-")
            found.update(range(int(low), int(high or low) + 1))
    else:
        return None
    return sorted(i for i in found if i < count)


def document_pages(data: bytes, mime: str) -> list[str] | None:
    """What OCR reads in the document, page by page; None when it cannot be opened."""
    if mime == "application/pdf" or data.startswith(b"%PDF"):
        try:
            from pypdf import PdfReader

            reader = PdfReader(io.BytesIO(data))
            texts = [(page.extract_text() or "").strip() for page in reader.pages]
        except Exception:
            return None
        return [t or f"Scanned text of page {i + 1}" for i, t in enumerate(texts)]
    if data.startswith(b"PK"):
        try:
            root = ElementTree.fromstring(
                zipfile.ZipFile(io.BytesIO(data)).read("word/document.xml")
            )
        except Exception:
            return None
        paragraphs = ["".join(t.text or "" for t in p.iter(f"{_W}t")) for p in root.iter(f"{_W}p")]
        return ["\n\n".join(p for p in paragraphs if p)]
    if data[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1"):
        return ["Text read from the image"]
    return None


def ogg_seconds(data: bytes) -> float | None:
    if not data.startswith(b"OggS"):
        return None
    last = data.rfind(b"OggS")
    (granule,) = struct.unpack_from("<q", data, last + 6)
    head = data.find(b"OpusHead")
    skip = struct.unpack_from("<H", data, head + 10)[0] if head >= 0 else 0
    return (granule - skip) / 48_000 if granule > skip else None


class FileEndpoints:
    """OCR and transcription for a FakeMistral (`api_key` is read from it per request)."""

    def __init__(self, api_key: Callable[[], str | None]) -> None:
        self._api_key = api_key
        self.ocr_requests: list[dict[str, Any]] = []
        self.transcriptions: list[dict[str, Any]] = []  # fields, filename, content type, data
        self._ocr_queue: deque[FileError] = deque()
        self._transcription_queue: deque[Transcription | FileError] = deque()

    def install(self, app: web.Application) -> None:
        app.router.add_post("/v1/ocr", self._ocr)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)

    def enqueue_ocr(self, *responses: FileError) -> None:
        self._ocr_queue.extend(responses)

    def enqueue_transcription(self, *responses: Transcription | FileError) -> None:
        self._transcription_queue.extend(responses)

    def _unauthorised(self, request: web.Request) -> web.Response | None:
        key = self._api_key()
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"detail": "Unauthorized"}, status=401)
        return None

    # OCR

    async def _ocr(self, request: web.Request) -> web.Response:
        refused = self._unauthorised(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _error("Invalid JSON body", 400)
        if not isinstance(body, dict):
            return _error("Body must be an object", 422)
        self.ocr_requests.append(body)
        checked = self._check_ocr(body)
        if isinstance(checked, web.Response):
            return checked
        data, mime = checked
        if self._ocr_queue:
            scripted = self._ocr_queue.popleft()
            return web.json_response(scripted.body, status=scripted.status)
        texts = document_pages(data, mime)
        if texts is None:
            return _error("The document could not be processed", 400)
        indexes = wanted_pages(body.get("pages"), len(texts))
        if indexes is None:
            return _error("pages must be a list of integers or a string like '0,2-4'", 422)
        pages = [
            {
                "index": i,
                "markdown": f"![img-{i}.jpeg](img-{i}.jpeg)\n{texts[i]}",
                "images": [],
                "tables": [],
                "hyperlinks": [],
                "header": None,
                "footer": None,
                "dimensions": {"dpi": 200, "height": 2200, "width": 1700},
            }
            for i in indexes
        ]
        return web.json_response(
            {
                "pages": pages,
                "model": OCR_MODEL_ANSWERED,
                "document_annotation": None,
                "usage_info": {"pages_processed": len(pages), "doc_size_bytes": len(data)},
            }
        )

    @staticmethod
    def _check_ocr(body: dict[str, Any]) -> tuple[bytes, str] | web.Response:
        extra = [k for k in body if k not in OCR_FIELDS]
        if extra:
            return _extra(extra)
        for key in ("model", "document"):
            if key not in body:
                return _missing(key)
        if not isinstance(body["model"], str):
            return _error("model must be a string", 422)
        if not isinstance(body.get("include_image_base64", False), bool):
            return _error("include_image_base64 must be a boolean", 422)
        if wanted_pages(body.get("pages"), 10**6) is None:
            return _error("pages must be a list of integers or a string like '0,2-4'", 422)
        document = body["document"]
        if not isinstance(document, dict):
            return _error("document must be an object", 422)
        kind = document.get("type")
        url = document.get(kind) if kind in ("document_url", "image_url") else None
        if isinstance(url, dict) and kind == "image_url":
            url = url.get("url")
        if not isinstance(url, str):
            return _error(f"document: a {kind or 'document_url'} string is required", 422)
        match = DATA_URL.match(url)
        if match is None:
            return _error("only data: URLs are served by this fake", 400)
        try:
            data = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            return _error("document_url: invalid base64 data", 400)
        if len(data) > MAX_DOCUMENT_BYTES:
            return _error("Document is larger than the 50 MB limit", 400)
        return data, match.group(1)

    # Transcription

    async def _transcribe(self, request: web.Request) -> web.Response:
        refused = self._unauthorised(request)
        if refused is not None:
            return refused
        if not request.content_type.startswith("multipart/form-data"):
            return _error("Expected a multipart/form-data body", 400)
        form = await request.post()
        fields = {k: v for k, v in form.items() if not isinstance(v, web.FileField)}
        upload = form.get("file")
        record: dict[str, Any] = {"fields": fields, "names": list(form.keys())}
        if isinstance(upload, web.FileField):
            record.update(
                filename=upload.filename,
                content_type=upload.content_type,
                data=upload.file.read(),
            )
        self.transcriptions.append(record)
        problem = self._check_transcription(form, record)
        if problem is not None:
            return problem
        if self._transcription_queue:
            scripted = self._transcription_queue.popleft()
            if isinstance(scripted, FileError):
                return web.json_response(scripted.body, status=scripted.status)
        else:
            scripted = Transcription(f"(transcript of {record['filename']})")
        seconds = scripted.seconds or ogg_seconds(record["data"]) or 1.0
        tokens = len(scripted.text.split())
        return web.json_response(
            {
                "model": "voxtral-mini-2602",
                "text": scripted.text,
                "language": "en",
                "segments": [],
                "usage": {
                    "prompt_audio_seconds": math.ceil(seconds),
                    "prompt_tokens": math.ceil(seconds) * 13,
                    "completion_tokens": tokens,
                    "total_tokens": math.ceil(seconds) * 13 + tokens,
                },
            }
        )

    @staticmethod
    def _check_transcription(form: Any, record: dict[str, Any]) -> web.Response | None:
        extra = [k for k in form if k not in TRANSCRIPTION_FIELDS]
        if extra:
            return _extra(extra)
        if "model" not in form:
            return _missing("model")
        sources = [k for k in ("file", "file_url", "file_id") if k in form]
        if len(sources) != 1:
            return _error("Exactly one of file, file_url or file_id is required", 400)
        if "file" in form:
            if "data" not in record:
                return _error("file must be an uploaded file, not a text field", 422)
            if not record["data"]:
                return _error("file is empty", 400)
            if not record["filename"]:
                return _error("file needs a file name", 422)
        if "language" in form and "timestamp_granularities" in form:
            return _error("language cannot be combined with timestamp_granularities", 400)
        if str(form.get("stream", "false")).lower() != "false":
            return _error("stream must be false on this endpoint", 400)
        return None
