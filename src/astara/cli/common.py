"""What every `astara` command group shares: the console, the options that
say which server and credential to use, and one call to the operators' API
that turns its errors into a clear line and exit status 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from astara.cli import api_client

console = Console()

UrlOption = Annotated[str | None, typer.Option("--url", help="The server (env ASTARA_URL)")]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="An admin token (env ASTARA_TOKEN)")
]
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="A server's state dir (env ASTARA_STATE_DIR)")
]


def api(
    url: str | None,
    token: str | None,
    state_dir: Path | None,
    method: str,
    path: str,
    body: Any = None,
) -> Any:
    try:
        return api_client.request(api_client.resolve(url, token, state_dir), method, path, body)
    except api_client.ApiError as error:
        prefix = f"{error.status} " if error.status else ""
        console.print(f"[red]error:[/red] {prefix}{error}", markup=True, highlight=False)
        raise typer.Exit(1) from error
