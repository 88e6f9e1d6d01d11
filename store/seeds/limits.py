"""How large a seed file, one record and a qna.yaml may be, and the checks against those limits.

The limits are in bytes; a text's size is checked without encoding it whenever its length
in characters already decides.
"""

from __future__ import annotations

MAX_RECORD_BYTES = 1 << 20
# The whole file is held in memory as bytes, then as text, then as drafts: a few times
# its size at the peak. Larger data sets import as several files.
MAX_FILE_BYTES = 1 << 30
# PyYAML's pure-Python parser reads about 200 KB/s; InstructLab qna files are a few KB.
MAX_QNA_BYTES = 2 << 20


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


def _too_big(text: str, start: int = 0, end: int | None = None) -> bool:
    end = len(text) if end is None else end
    # A character is 1 to 4 UTF-8 bytes: only the lengths in between need encoding.
    if (end - start) * 4 <= MAX_RECORD_BYTES:
        return False
    if end - start > MAX_RECORD_BYTES:
        return True
    return len(text[start:end].encode("utf-8", "surrogatepass")) > MAX_RECORD_BYTES
