"""The error hierarchy every package raises; only the CLI turns these into messages and exit codes.

It lives in `store/` because store is the package everything else may import.
"""

from __future__ import annotations


class EvoError(Exception):
    """Base of every error a user should see as one plain message."""

    exit_code = 1


class InputError(EvoError):
    """Bad input from the user: a file, a flag, a config value. Exit code 2."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.detail = message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        parts = [where] if where else []
        if field:
            parts.append(f"field '{field}'")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(InputError):
    """The config file or an override is invalid."""


class ProjectError(InputError):
    """The project directory is missing, not initialised, or locked."""


class ModelError(EvoError):
    """A model could not be reached or used (the whole model, not one request)."""


class UnsupportedError(EvoError):
    """A backend cannot do what was asked (loss on an HTTP server, QLoRA without CUDA...)."""


class Interrupted(EvoError):
    """Work that ended early because a stop was requested (a training run that checkpointed
    and exited): not a failure; the step resumes on the next start. Exit code 0."""

    exit_code = 0


def describe_error(exc: BaseException) -> str:
    """One line for a recorded failure: an EvoError is already worded for the user; anything
    else (a ValueError from peft) needs its type to be recognisable."""
    if isinstance(exc, EvoError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
