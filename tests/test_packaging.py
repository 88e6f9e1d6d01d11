"""pyproject.toml lists every package of the six folders, so a built wheel carries all of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("agents", "graph", "prompts", "store", "text", "trainer")


def test_every_package_folder_is_listed_under_its_evoinstruct_name() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    assert setuptools["package-dir"] == {f"evoinstruct.{f}": f for f in FOLDERS}
    on_disk = {
        "evoinstruct." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == on_disk
