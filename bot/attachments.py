"""What to do with files people attach: images go to the model, text is inlined.

Adapters describe each file as an `Attachment` with a `fetch` coroutine (so the
platform's own download rules stay in the adapter) and call `prepare`. Every file
either reaches the model or produces a one-line note the adapter shows to the user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from bot.types import AttachmentMeta, Image

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


@dataclass(frozen=True)
class Attachment:
    name: str
    mime: str
    size: int
    fetch: Callable[[], Awaitable[bytes]]


@dataclass
class Prepared:
    images: tuple[Image, ...] = ()
    text: str = ""
    notes: list[str] = field(default_factory=list)
    meta: tuple[AttachmentMeta, ...] = ()


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
    if mime.startswith("image/") or suffix in IMAGE_EXTENSIONS:
        return "image"
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
    mime = sniff_image(data)
    if mime is None:
        if _looks_like_html(data):
            notes.append(f"{attachment.name} came back as a login page, not an image; left out.")
        else:
            notes.append(f"{attachment.name} isn't a PNG, JPEG, WebP or GIF image; left out.")
        return None
    return Image(mime=mime, data=data, name=attachment.name)


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


async def prepare(attachments: Sequence[Attachment]) -> Prepared:
    """Download and sort attachments into images, inlined text and user-facing notes."""
    result = Prepared()
    images: list[Image] = []
    texts: list[str] = []
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
        else:
            result.notes.append(
                f"{attachment.name} can't be read by the model (only images and text files)."
            )
    result.images = tuple(images)
    result.text = "".join(texts)
    result.meta = tuple(meta)
    return result
