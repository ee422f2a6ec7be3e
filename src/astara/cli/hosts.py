"""`astara host ...`: the deployment's hosts (their agents), as operators see them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from astara.cli import api_client

host_cli = typer.Typer(
    add_completion=False, help="Hosts: state, heartbeat, appliances; drain, remove, join."
)
console = Console()

UrlOption = Annotated[str | None, typer.Option("--url", help="The server (env ASTARA_URL)")]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="An admin token (env ASTARA_TOKEN)")
]
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="A server's state dir (env ASTARA_STATE_DIR)")
]


def _api(
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


@host_cli.command("list")
def host_list(
    url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Every host: state (up, down, drained), last heartbeat, zone, appliances."""
    table = Table("name", "state", "last heartbeat", "zone", "underlay", "appliances", "address")
    for host in _api(url, token, state_dir, "GET", "/astara/v1/hosts")["hosts"]:
        table.add_row(
            host["name"],
            host["state"],
            host["last_heartbeat"] or "",
            host["availability_zone"],
            host["underlay_address"] or "",
            str(host["appliances"]),
            host["address"],
        )
    console.print(table)


@host_cli.command("show")
def host_show(
    name: str, url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """One host: its state, capacity, the appliances placed and ports plugged there."""
    shown = _api(url, token, state_dir, "GET", f"/astara/v1/hosts/{name}")["host"]
    console.print_json(json.dumps(shown))


@host_cli.command("drain")
def host_drain(
    name: str, url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Place no new appliance on a host (what runs there stays: move it with router move)."""
    _api(url, token, state_dir, "POST", f"/astara/v1/hosts/{name}/drain")
    console.print(f"host {name} drained")


@host_cli.command("undrain")
def host_undrain(
    name: str, url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Let a drained host take new appliances again."""
    _api(url, token, state_dir, "POST", f"/astara/v1/hosts/{name}/undrain")
    console.print(f"host {name} undrained")


@host_cli.command("remove")
def host_remove(
    name: str, url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Revoke a host's certificate and forget it; its appliances are rebuilt elsewhere."""
    _api(url, token, state_dir, "DELETE", f"/astara/v1/hosts/{name}")
    console.print(f"host {name} removed (its certificate is revoked)")


@host_cli.command("join-token")
def host_join_token(
    ttl_s: Annotated[int, typer.Option("--ttl-s", help="Seconds the token is valid")] = 3600,
    url: UrlOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Print a one-time token an agent joins with (astara-agent --join URL --token T)."""
    created = _api(url, token, state_dir, "POST", "/astara/v1/hosts/join-tokens", {"ttl_s": ttl_s})
    typer.echo(created["token"])
    console.print(f"expires at {created['expires_at']}", style="dim", highlight=False)
