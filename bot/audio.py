"""Voice messages and audio files, transcribed by Mistral's Voxtral.

The transcript becomes the message's text (stored as such), and the reply shows it back
as a short quote so people see what was heard. Clips longer than TEAMBOT_AUDIO_SECONDS
are left out with a note before anything is downloaded when the platform says how long
they are (Discord's `duration_secs`, Slack's `duration_ms`), else after reading an Ogg
file's own length. Transcripts are kept in the store by content hash, and each call's
minutes are billed in the usage table (kind "transcription").
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from bot.accounting import Accounts, transcription_cost_usd
from bot.documents import ReadFailed, call_api
from bot.store import Store
from bot.types import ConversationKey, Usage

log = logging.getLogger("teambot.audio")

TRANSCRIPTION_MODEL = "voxtral-mini-latest"
TRANSCRIPTION_TIMEOUT = 300.0  # what Mistral's own SDK waits
MAX_AUDIO_BYTES = 100 * 1024 * 1024
AUDIO_EXTENSIONS = frozenset(".ogg .oga .opus .mp3 .wav .flac .webm .m4a .aac".split())
QUOTE_CHARS = 300
OPUS_RATE = 48_000  # Opus granule positions always count 48 kHz samples


def is_audio(name: str, mime: str) -> bool:
    declared = mime.split(";")[0].strip().lower()
    return declared.startswith("audio/") or PurePosixPath(name.lower()).suffix in AUDIO_EXTENSIONS


def ogg_seconds(data: bytes) -> float | None:
    """An Ogg Opus or Vorbis file's length from its last page's granule position."""
    if not data.startswith(b"OggS"):
        return None
    last = data.rfind(b"OggS")
    if last < 0 or len(data) < last + 14:
        return None
    (granule,) = struct.unpack_from("<q", data, last + 6)
    rate, skip = OPUS_RATE, 0
    opus = data.find(b"OpusHead")
    vorbis = data.find(b"\x01vorbis")
    if opus >= 0 and len(data) >= opus + 12:
        (skip,) = struct.unpack_from("<H", data, opus + 10)  # samples the decoder drops
    elif vorbis >= 0 and len(data) >= vorbis + 16:
        (rate,) = struct.unpack_from("<I", data, vorbis + 12)
    return (granule - skip) / rate if granule > skip and rate > 0 else None


def clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def heard(text: str) -> str:
    """The transcript as the short quote shown above the answer."""
    flat = " ".join(text.split())
    if len(flat) > QUOTE_CHARS:
        flat = flat[: QUOTE_CHARS - 1].rstrip() + "…"
    return f"🎙 “{flat}”"


@dataclass(frozen=True)
class Transcript:
    text: str
    seconds: float


class TranscriptionClient:
    """Mistral's transcription endpoint: multipart audio in, text out."""

    def __init__(self, base_url: str, api_key: str, timeout: float = TRANSCRIPTION_TIMEOUT) -> None:
        self.url = base_url.rstrip("/") + "/audio/transcriptions"
        self.api_key = api_key
        self.timeout = timeout

    async def transcribe(self, data: bytes, name: str, mime: str) -> tuple[Transcript, Usage]:
        answer = await call_api(
            self.url,
            self.api_key,
            self.timeout,
            data={"model": TRANSCRIPTION_MODEL},
            files={"file": (name or "audio", data, mime or "application/octet-stream")},
        )
        text = answer.get("text")
        if not isinstance(text, str):
            raise ReadFailed("the service sent an unreadable answer")
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        seconds = usage.get("prompt_audio_seconds")
        spent = Usage(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )
        return Transcript(text.strip(), float(seconds or 0)), spent


class Voice:
    """Transcribes each audio file once (cached by content hash, billed per minute)."""

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        client: TranscriptionClient,
        max_seconds: int,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.client = client
        self.max_seconds = max_seconds

    def too_long(self, seconds: float | None) -> bool:
        return seconds is not None and seconds > self.max_seconds

    async def transcribe(
        self, data: bytes, name: str, mime: str, key: ConversationKey, user_id: str
    ) -> Transcript:
        cache_key = f"{hashlib.sha256(data).hexdigest()}:{TRANSCRIPTION_MODEL}"
        cached = await self.store.extract(cache_key)
        if cached is not None:
            stored = json.loads(cached)
            return Transcript(str(stored["text"]), float(stored["seconds"]))
        started = time.perf_counter()
        transcript, usage = await self.client.transcribe(data, name, mime)
        elapsed_ms = (time.perf_counter() - started) * 1000
        await self.store.save_extract(
            cache_key,
            "transcript",
            json.dumps({"text": transcript.text, "seconds": transcript.seconds}),
        )
        await self.accounts.record_file(
            key,
            user_id,
            "transcription",
            TRANSCRIPTION_MODEL,
            transcription_cost_usd(transcript.seconds),
            elapsed_ms,
            usage,
        )
        log.info("transcribed %.0f s of audio in %s: %.0f ms", transcript.seconds, key, elapsed_ms)
        return transcript
