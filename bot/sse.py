"""Server-sent events from raw bytes, as they arrive (the model's streaming wire format)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

import httpx


def sse_bytes(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body as it arrives; undecoded unless the server compressed it."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    chunks = response.aiter_raw() if encoding == "identity" else response.aiter_bytes()
    return cast(AsyncGenerator[bytes, None], chunks)  # both are async generators


_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Splits server-sent events out of the body's bytes as they arrive; `feed` returns the
    `data` of each event completed by the chunk (multi-line data joined by newlines).

    Lines end with CRLF, LF or CR (a CR at the end of a chunk waits for the next one, in case
    it is half a CRLF); a blank line ends an event; comments and fields other than `data` are
    skipped; a leading UTF-8 BOM is dropped. Payloads are decoded as UTF-8, as the SSE spec
    requires, with undecodable bytes replaced. Only CR and LF end lines: unlike
    `str.splitlines`, a U+2028 or U+0085 in the data does not split an event.
    """

    __slots__ = ("_buffer", "_cr", "_start")

    def __init__(self) -> None:
        self._buffer = b""
        self._cr = False  # the previous chunk ended in CR, held back
        self._start = True  # a BOM may still be coming

    def feed(self, chunk: bytes) -> list[str]:
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._start:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            self._start = False
            buffer = buffer.removeprefix(_BOM)
        end = buffer.rfind(b"\n\n")  # the last blank line: everything before it is complete
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 2 :]
        block = buffer[:end]
        if block.startswith(b"data: ") and b"\n" not in block:  # the usual one-line event
            return [block[6:].decode("utf-8", "replace")]
        return _sse_events(block)

    def flush(self) -> list[str]:
        """Whatever the body ended with: a last event without its blank line, if any."""
        buffer = self._buffer + b"\n" if self._cr else self._buffer
        self._buffer, self._cr = b"", False
        if self._start:
            self._start = False
            buffer = buffer.removeprefix(_BOM)
        return _sse_events(buffer) if buffer else []


def _sse_events(block: bytes) -> list[str]:
    """The events of whole LF-terminated lines (the last one may lack its LF)."""
    events: list[str] = []
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line:
            if data:
                events.append(b"\n".join(data).decode("utf-8", "replace"))
                data = []
            continue
        name, _, value = line.partition(b":")  # a ":" comment line has an empty name
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        events.append(b"\n".join(data).decode("utf-8", "replace"))
    return events
