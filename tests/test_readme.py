"""The README documents every command and every config key, and its reference is current."""

from __future__ import annotations

from pathlib import Path

import typer.main
from pydantic import BaseModel

from evoinstruct.cli.docs import README, render_readme
from evoinstruct.cli.main import app
from evoinstruct.graph.config import RunConfig

TEXT = README.read_text(encoding="utf-8")


def command_paths(group, prefix: str = "evoinstruct") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):  # a group of subcommands
            paths.extend(command_paths(command, path))
        else:
            paths.append(path)
    return paths


def test_every_command_is_in_the_readme() -> None:
    commands = command_paths(typer.main.get_command(app))
    assert len(commands) >= 20
    for path in commands:
        *group, leaf = path.split()
        # Subcommands may be listed as alternatives: `evoinstruct inspect rounds | checkpoints ...`.
        if len(group) == 2:
            line = next(
                (ln for ln in TEXT.splitlines() if " ".join(group) in ln and leaf in ln), None
            )
            assert line is not None, path
        else:
            assert path in TEXT, path


def test_every_command_has_an_example_in_its_help() -> None:
    def walk(group) -> None:
        for command in group.commands.values():
            if hasattr(command, "commands"):
                walk(command)
            else:
                assert "Example:" in (command.help or ""), command.name

    walk(typer.main.get_command(app))


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(config_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_config_key_is_in_the_readme() -> None:
    from evoinstruct.models.config import ModelConfig

    keys = config_keys(RunConfig) + [f"models.NAME.{k}" for k in ModelConfig.model_fields]
    assert len(keys) > 100
    for key in keys:
        section, _, leaf = key.rpartition(".")
        if section in ("", "models"):
            continue  # top-level tables; the named models' keys are checked under models.NAME  # the table of named models; its keys are under models.NAME
        assert f"### `[{section}]`" in TEXT, section
        block = TEXT.split(f"### `[{section}]`", 1)[1].split("### `[", 1)[0]
        assert f"| `{leaf}` |" in block, key


def test_the_config_reference_is_current() -> None:
    assert render_readme(TEXT) == TEXT, (
        "run `python -m evoinstruct.cli.docs` to regenerate the README's reference"
    )


def test_readme_names_the_commands_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in TEXT and "make demo" in TEXT
