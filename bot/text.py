"""Text at the edges: repaired at the door, and money as people read it.

Nothing that cannot be encoded as UTF-8 gets past the door.

JSON allows lone UTF-16 surrogates (`"\\ud800"`), and Python decodes them into `str`
values that SQLite, PostgreSQL and every HTTP client refuse to encode. Undecodable
bytes (a pasted binary, a wrong locale) must not end a session either. Both become
U+FFFD, the replacement character, where platform text enters bot/ and where model
output is decoded.
"""

from __future__ import annotations

import math
import re
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def repair(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a valid pair becomes its
    character); text that is already valid comes back as the same object."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    # UTF-16 round trip: pairs join into their character, lone halves become U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def decode(data: bytes) -> str:
    """Bytes from outside (a terminal, a pipe) as text; undecodable bytes become U+FFFD."""
    return data.decode("utf-8", "replace")


def repair_value(value: Any) -> Any:
    """A parsed JSON value with every string in it repaired (keys too)."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, list):
        return [repair_value(item) for item in value]
    if isinstance(value, dict):
        return {repair(str(k)): repair_value(v) for k, v in value.items()}
    return value


def usd(amount: float, places: int = 4) -> str:
    """Dollars for people, without the sign: `places` decimals, but a non-zero amount
    below a cent keeps two significant digits (0.000045, never 0.0000)."""
    if 0 < abs(amount) < 0.01:
        places = 1 - math.floor(math.log10(abs(amount)))
    return f"{amount:.{places}f}"
