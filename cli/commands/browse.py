"""`evoinstruct browse`: the pool in Datasette (the optional `browse` extra)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from evoinstruct.cli.common import ProjectOpt, console, open_project
from evoinstruct.store.errors import EvoError, InputError, ProjectError


def _port_free(host: str, port: int) -> bool:
    # uvicorn would log a bind failure and exit 1 with a traceback-like message; ask first.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def browse(
    project: ProjectOpt = Path("."),
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")] = 8001,
    host: Annotated[str, typer.Option("--host", help="Address to serve on.")] = "127.0.0.1",
) -> None:
    r"""Browse the pool in Datasette, read-only; safe beside a running daemon.

    Lineage links, accepted examples with scores, ancestry, search in any language.
    Needs the browse extra: pip install 'evoinstruct\[browse]'.
    Example: evoinstruct browse --port 8002
    """
    from importlib.util import find_spec

    from evoinstruct.cli import browse as library

    proj = open_project(project)
    if find_spec("datasette") is None:
        raise InputError("datasette is not installed: pip install 'evoinstruct[browse]'")
    if not proj.pool_path.is_file():
        raise ProjectError("no pool.db in this project yet", file=str(proj.root))
    if not _port_free(host, port):
        raise EvoError(f"port {port} on {host} is in use; pick another with --port")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/{library.DATABASE}"
    console.print(f"Browsing {proj.pool_path} read-only at {url}", soft_wrap=True, markup=False)
    console.print("Ctrl-C stops.", markup=False)
    library.serve(proj.pool_path, host=host, port=port, title=f"evoinstruct pool: {proj.root.name}")
