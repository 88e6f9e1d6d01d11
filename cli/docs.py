"""Regenerate the README's config reference from the config models: `python -m evoinstruct.cli.docs`.

A test compares the README with this output, so the reference cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def reference() -> str:
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.config_toml import config_reference

    return config_reference(RunConfig)


def render_readme(text: str) -> str:
    """The README with the section between the markers replaced by the current reference."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n\n{reference()}\n{END}{tail}"


def main() -> int:
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{README}: the config reference markers are missing", file=sys.stderr)
        return 2
    README.write_text(render_readme(text), encoding="utf-8")
    print(f"updated the config reference in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
