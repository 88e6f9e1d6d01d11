"""The `evoinstruct` command as a process: what detaching, the tests and the benches start."""

from __future__ import annotations

import sys

CLI_MODULE = "evoinstruct.cli.main"


def cli_command(*args: str) -> list[str]:
    """`evoinstruct ARGS...` run by this interpreter.

    -P: `python -m` would put the working directory, often the project, first on
    sys.path, and a project file such as jinja2.py or openai.py would then shadow a
    library in that process only (the installed `evoinstruct` script never imports
    from its working directory).
    """
    return [sys.executable, "-P", "-m", CLI_MODULE, *args]
