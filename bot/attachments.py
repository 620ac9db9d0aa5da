"""What to do with files people attach: images go to the model, text is inlined,
documents are read into page-numbered text, voice messages are transcribed.

Adapters describe each file as an `Attachment` with a `fetch` coroutine (so the
platform's own download rules stay in the adapter) and call `prepare`, with a `Reading`
(the engine's `Readers` bound to the asker, who pays for OCR and transcription) when the
message is one the bot answers. Every file either reaches the model or produces a
one-line note the adapter shows to the user; images are decoded first (Pillow), so a
file that is not really an image never reaches the model and an animated GIF goes as
its first frame.
"""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from PIL import Image as PILImage

from bot import audio
from bot.accounting import Accounts
from bot.audio import TranscriptionClient, Voice, clock, heard, ogg_seconds
from bot.config import Settings
from bot.documents import (
    MAX_DOCUMENT_BYTES,
    Documents,
    OcrClient,
    Pages,
    ReadFailed,
    document_type,
    inline,
)
from bot.store import Store
from bot.types import AttachmentMeta, ConversationKey, Image

log = logging.getLogger("teambot.attachments")

MAX_IMAGES = 8  # Mistral accepts at most 8 images per request
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_TEXT_FILE_BYTES = 1024 * 1024
MAX_TEXT_CHARS = 40_000  # per file, after decoding
MAX_TEXT_TOTAL_CHARS = 100_000

TEXT_EXTENSIONS = frozenset(
    ".txt .md .markdown .rst .csv .tsv .log .json .yaml .yml .toml .ini .cfg .conf .env.example "
    ".xml .html .htm .css .scss .js .mjs .cjs .ts .tsx .jsx .py .pyi .rb .go .rs .java .kt .kts "
    ".scala .swift .c .h .cc .cpp .hpp .cs .php .pl .lua .r .sql .sh .bash .zsh .ps1 .bat "
    ".dockerfile .tf .hcl .gradle .diff .patch .tex .vue .svelte .ex .exs .erl .hs .ml .clj "
    ".dart .m .mm .proto .graphql".split()
)
IMAGE_EXTENSIONS = frozenset(".png .jpg .jpeg .webp .gif".split())
# What Pillow calls the formats the model accepts, and their MIME types.
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
NOT_AN_IMAGE = "{} isn't a PNG, JPEG, WebP or GIF image; left out."


@dataclass(frozen=True)
class Attachment:
    name: str
    mime: str
    size: int
    fetch: Callable[[], Awaitable[bytes]]
    voice: bool = False  # a recorded voice message (Discord's flag, Slack's audio clip)
    seconds: float | None = None  # an audio file's length when the platform says it


@dataclass
class Prepared:
    images: tuple[Image, ...] = ()
    text: str = ""  # inlined files, appended to the message's words
    notes: list[str] = field(default_factory=list)
    meta: tuple[AttachmentMeta, ...] = ()
    spoken: list[str] = field(default_factory=list)  # transcripts, as the message's words
    heard: list[str] = field(default_factory=list)  # "🎙 …" quotes shown with the answer

    def message_text(self, words: str) -> str:
        """What the message says for the model: the typed words, then what was said in
        voice messages, then the inlined files."""
        return "\n\n".join(part for part in (words, *self.spoken) if part) + self.text


@dataclass(frozen=True)
class Readers:
    """The services that read documents and audio, shared by every adapter."""

    documents: Documents
    voice: Voice
    doc_tokens: int

    @classmethod
    def create(cls, settings: Settings, store: Store, accounts: Accounts) -> Readers:
        ocr = None
        if settings.ocr:
            ocr = OcrClient(settings.mistral_base_url, settings.mistral_api_key)
        client = TranscriptionClient(settings.mistral_base_url, settings.mistral_api_key)
        return cls(
            Documents(store, accounts, ocr, settings.doc_pages),
            Voice(store, accounts, client, settings.audio_seconds),
            settings.doc_tokens,
        )

    def reading(self, key: ConversationKey, user_id: str) -> Reading:
        return Reading(self, key, user_id)


@dataclass(frozen=True)
class Reading:
    """`Readers` for one message: what they spend is billed to its asker and conversation."""

    readers: Readers
    key: ConversationKey
    user_id: str


def sniff_image(data: bytes) -> str | None:
    """The MIME type the bytes really are, among the formats the model accepts."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _kind(attachment: Attachment) -> str:
    suffix = PurePosixPath(attachment.name.lower()).suffix
    mime = attachment.mime.split(";")[0].strip().lower()
    if attachment.voice:
        return "audio"
    if document_type(attachment.name, mime):
        return "document"
    if mime.startswith("image/") or suffix in IMAGE_EXTENSIONS:
        return "image"
    if audio.is_audio(attachment.name, mime):
        return "audio"
    if mime.startswith("text/") or suffix in TEXT_EXTENSIONS or mime == "application/json":
        return "text"
    return "other"


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KB"


async def _download(attachment: Attachment, notes: list[str]) -> bytes | None:
    try:
        return await attachment.fetch()
    except Exception as exc:  # any download failure becomes a note, never a lost message
        log.warning("download of %r failed: %s", attachment.name, exc)
        notes.append(f"Couldn't download {attachment.name}; it was left out.")
        return None


async def _image(attachment: Attachment, count: int, notes: list[str]) -> Image | None:
    if count >= MAX_IMAGES:
        notes.append(f"{attachment.name} was left out: at most {MAX_IMAGES} images per message.")
        return None
    if attachment.size > MAX_IMAGE_BYTES:
        notes.append(
            f"{attachment.name} is too large ({_size(attachment.size)}; "
            f"the limit is {_size(MAX_IMAGE_BYTES)}), so it was left out."
        )
        return None
    data = await _download(attachment, notes)
    if data is None:
        return None
    if len(data) > MAX_IMAGE_BYTES:
        notes.append(f"{attachment.name} is too large ({_size(len(data))}), so it was left out.")
        return None
    if sniff_image(data) is None and _looks_like_html(data):
        notes.append(f"{attachment.name} came back as a login page, not an image; left out.")
        return None
    decoded = await asyncio.to_thread(decode_image, data)
    if decoded is None:
        notes.append(NOT_AN_IMAGE.format(attachment.name))
        return None
    mime, data = decoded
    if len(data) > MAX_IMAGE_BYTES:  # a GIF's first frame as PNG can outgrow the GIF
        notes.append(f"{attachment.name} is too large once converted, so it was left out.")
        return None
    return Image(mime=mime, data=data, name=attachment.name)


def decode_image(data: bytes) -> tuple[str, bytes] | None:
    """(MIME type, bytes to send) when `data` decodes fully as an image the model accepts,
    an animated one as its first frame in PNG; None for anything else (truncated or
    garbled files, other formats, decompression bombs)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as image:
                mime = IMAGE_FORMATS.get(image.format or "")
                if mime is None:
                    return None
                if getattr(image, "is_animated", False):
                    image.seek(0)
                    frame = io.BytesIO()
                    image.convert("RGBA").save(frame, "PNG")
                    return "image/png", frame.getvalue()
                image.load()  # decodes every pixel: a truncated file raises here
                return mime, data
    except (OSError, ValueError, SyntaxError, EOFError, PILImage.DecompressionBombWarning):
        return None
    except PILImage.DecompressionBombError:
        return None


def _fence_for(content: str) -> str:
    longest = run = 0
    for char in content:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


async def _text(attachment: Attachment, used: int, notes: list[str]) -> str:
    if attachment.size > MAX_TEXT_FILE_BYTES:
        notes.append(f"{attachment.name} is too large to read ({_size(attachment.size)}).")
        return ""
    data = await _download(attachment, notes)
    if data is None:
        return ""
    if b"\x00" in data[:8192]:
        notes.append(f"{attachment.name} looks binary, so it was left out.")
        return ""
    content = data.decode("utf-8", errors="replace")
    room = min(MAX_TEXT_CHARS, MAX_TEXT_TOTAL_CHARS - used)
    if room <= 0:
        notes.append(f"{attachment.name} was left out: too much attached text in one message.")
        return ""
    if len(content) > room:
        content = content[:room]
        notes.append(f"{attachment.name} was cut to its first {room:,} characters.")
    fence = _fence_for(content)
    return f"\n\n[Attached file: {attachment.name}]\n{fence}\n{content}\n{fence}"


async def _document(attachment: Attachment, reading: Reading, notes: list[str]) -> Pages | None:
    mime = document_type(attachment.name, attachment.mime) or ""
    if attachment.size > MAX_DOCUMENT_BYTES:
        notes.append(
            f"{attachment.name} is too large to read ({_size(attachment.size)}; "
            f"the limit is {_size(MAX_DOCUMENT_BYTES)})."
        )
        return None
    data = await _download(attachment, notes)
    if data is None:
        return None
    if len(data) > MAX_DOCUMENT_BYTES:
        notes.append(f"{attachment.name} is too large to read ({_size(len(data))}).")
        return None
    try:
        pages = await reading.readers.documents.read(data, mime, reading.key, reading.user_id)
    except ReadFailed as failure:
        log.warning("reading %r failed: %s", attachment.name, failure)
        notes.append(f"{attachment.name} couldn't be read ({failure}); it was left out.")
        return None
    if pages.scanned:
        notes.append(
            f"{attachment.name} looks scanned (it has no text layer); reading it needs OCR, "
            "which is turned off here."
        )
        return None
    return pages


def _too_long(attachment: Attachment, seconds: float, limit: int, result: Prepared) -> None:
    result.notes.append(
        f"{attachment.name} is {clock(seconds)} long; I transcribe up to {clock(limit)}, "
        "so it was left out."
    )
    result.spoken.append(f"[{attachment.name}: a {clock(seconds)} recording, left out]")


async def _audio(attachment: Attachment, reading: Reading, result: Prepared) -> None:
    voice = reading.readers.voice
    if attachment.seconds is not None and voice.too_long(attachment.seconds):
        _too_long(attachment, attachment.seconds, voice.max_seconds, result)
        return  # never downloaded
    if attachment.size > audio.MAX_AUDIO_BYTES:
        result.notes.append(f"{attachment.name} is too large to transcribe; it was left out.")
        return
    data = await _download(attachment, result.notes)
    if data is None:
        return
    seconds = ogg_seconds(data) if attachment.seconds is None else None
    if seconds is not None and voice.too_long(seconds):
        _too_long(attachment, seconds, voice.max_seconds, result)
        return
    try:
        transcript = await voice.transcribe(
            data, attachment.name, attachment.mime, reading.key, reading.user_id
        )
    except ReadFailed as failure:
        log.warning("transcribing %r failed: %s", attachment.name, failure)
        result.notes.append(f"{attachment.name} couldn't be transcribed ({failure}).")
        result.spoken.append(f"[{attachment.name}: a recording that could not be transcribed]")
        return
    text = transcript.text or "(nothing audible)"
    result.heard.append(heard(text))
    result.spoken.append(text if attachment.voice else f"[Transcript of {attachment.name}]\n{text}")


async def prepare(attachments: Sequence[Attachment], reading: Reading | None = None) -> Prepared:
    """Download and sort attachments into images, inlined text, transcripts and
    user-facing notes. Documents and audio are read only with a `reading`."""
    result = Prepared()
    images: list[Image] = []
    texts: list[str] = []
    documents: list[tuple[str, Pages]] = []
    meta: list[AttachmentMeta] = []
    for attachment in attachments:
        meta.append(AttachmentMeta(attachment.name, attachment.mime, attachment.size))
        kind = _kind(attachment)
        if kind == "image":
            image = await _image(attachment, len(images), result.notes)
            if image:
                images.append(image)
        elif kind == "text":
            block = await _text(attachment, sum(len(t) for t in texts), result.notes)
            if block:
                texts.append(block)
        elif kind == "document" and reading is not None:
            pages = await _document(attachment, reading, result.notes)
            if pages is not None:
                documents.append((attachment.name, pages))
        elif kind == "audio" and reading is not None:
            await _audio(attachment, reading, result)
        else:
            result.notes.append(
                f"{attachment.name} can't be read by the model (only images and text files)."
            )
    if documents and reading is not None:
        inlined, notes = await inline(documents, reading.readers.doc_tokens)
        texts.insert(0, inlined)
        result.notes += notes
    result.images = tuple(images)
    result.text = "".join(texts)
    result.meta = tuple(meta)
    return result
