"""Plain text seed files: one instruction per line, blank lines and # comments skipped.

Read only from a .txt file or with an explicit `--format text`: anything reads as text.
"""

from __future__ import annotations

from pathlib import Path

from evoinstruct.store.errors import InputError
from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.seeds.limits import _too_big
from evoinstruct.store.seeds.reading import _lines


def _read_text_lines(path: Path, text: str) -> tuple[list[ExampleDraft], int]:
    drafts = []
    for lineno, line in _lines(text):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\r" in line:
            # Lines that end in CR alone (classic Mac) would read as one long instruction.
            raise InputError(
                "a carriage return (CR) inside the line: lines must end in LF or CRLF",
                file=str(path),
                line=lineno,
            )
        if _too_big(line):
            raise InputError("line is larger than 1 MiB", file=str(path), line=lineno)
        drafts.append(ExampleDraft(line.strip()))
    if not drafts:
        raise InputError("no instructions (only blank or comment lines)", file=str(path))
    return drafts, len(drafts)
