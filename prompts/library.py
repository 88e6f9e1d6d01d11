"""Prompt templates as files: loading by name and language, user overrides, strict rendering.

Templates live in `prompts/<language>/<name>.jinja2` inside the package. A
project may override any of them, or add new ones, with files of the same
relative path under `<project>/prompts/`. Rendering is strict: a variable the
template uses but the caller did not pass raises instead of printing nothing.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from evoinstruct.store.errors import ConfigError

LANGUAGES = ("en", "zh")
_PACKAGE_ROOT = Path(str(resources.files("evoinstruct.prompts")))


@dataclass
class PromptLibrary:
    """Renders templates for one language, preferring the project's override files."""

    language: str = "en"
    override_dir: Path | None = None
    _env: jinja2.Environment = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ConfigError(
                f"unknown language {self.language!r}; choose one of {', '.join(LANGUAGES)}",
                field="language",
            )
        search = []
        if self.override_dir is not None and self.override_dir.is_dir():
            search.append(str(self.override_dir))
        search.append(str(_PACKAGE_ROOT))
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )

    def template_name(self, name: str) -> str:
        """The relative path of a template: `<language>/<name>.jinja2`."""
        return f"{self.language}/{name}.jinja2"

    def render(self, name: str, **variables: Any) -> str:
        """Render a template by name; raises ConfigError naming the template on any problem."""
        path = self.template_name(name)
        try:
            template = self._env.get_template(path)
            return template.render(**variables).strip()
        except jinja2.TemplateNotFound as exc:
            raise ConfigError(f"no prompt template {path}", file=path) from exc
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"template variable missing: {exc.message}", file=path) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                exc.message or "syntax error", file=exc.filename, line=exc.lineno
            ) from exc

    def load_data(self, name: str) -> dict[str, Any]:
        """Load a TOML data file (`<name>.toml`); a project file of that name extends it.

        Data files are language-independent keys with per-language text inside,
        e.g. the rewriter's task types and their format criteria.
        """
        found: dict[str, Any] = {}
        paths = [_PACKAGE_ROOT / f"{name}.toml"]
        if self.override_dir is not None:
            paths.append(self.override_dir / f"{name}.toml")
        for path in paths:
            if not path.is_file():
                continue
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(str(exc), file=str(path)) from exc
            # A project file extends the packaged one table by table.
            for key, value in data.items():
                if isinstance(value, dict) and isinstance(found.get(key), dict):
                    found[key] = {**found[key], **value}
                else:
                    found[key] = value
        if not found:
            raise ConfigError(f"no prompt data file {name}.toml", file=f"{name}.toml")
        return found
