"""pyproject.toml lists every package of the top-level folders, so a built wheel carries all of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.test_layers import LAYERS

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = LAYERS  # every top-level package is in one layer


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
