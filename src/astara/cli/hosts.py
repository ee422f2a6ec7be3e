"""`astara host ...`: the deployment's hosts (their agents), as operators see them."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from astara.cli.common import StateDirOption, TokenOption, UrlOption, api, console

host_cli = typer.Typer(
    add_completion=False, help="Hosts: state, heartbeat, appliances; drain, remove, join."
)


@host_cli.command("list")
def host_list(
    url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Every host: state (up, down, drained), last heartbeat, zone, appliances."""
    table = Table("name", "state", "last heartbeat", "zone", "underlay", "appliances", "address")
    for host in api(url, token, state_dir, "GET", "/astara/v1/hosts")["hosts"]:
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
    shown = api(url, token, state_dir, "GET", f"/astara/v1/hosts/{name}")["host"]
    console.print_json(json.dumps(shown))


def _host_action(action: str, done: str, help_text: str) -> None:
    def command(
        name: str,
        url: UrlOption = None,
        token: TokenOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        api(url, token, state_dir, "POST", f"/astara/v1/hosts/{name}/{action}")
        console.print(f"host {name} {done}")

    command.__doc__ = help_text
    host_cli.command(action)(command)


_host_action(
    "drain",
    "drained",
    "Place no new appliance on a host (what runs there stays: move it with router move).",
)
_host_action("undrain", "undrained", "Let a drained host take new appliances again.")


@host_cli.command("remove")
def host_remove(
    name: str, url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Revoke a host's certificate and forget it; its appliances are rebuilt elsewhere."""
    api(url, token, state_dir, "DELETE", f"/astara/v1/hosts/{name}")
    console.print(f"host {name} removed (its certificate is revoked)")


@host_cli.command("join-token")
def host_join_token(
    ttl_s: Annotated[int, typer.Option("--ttl-s", help="Seconds the token is valid")] = 3600,
    url: UrlOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Print a one-time token an agent joins with (astara-agent --join URL --token T)."""
    created = api(url, token, state_dir, "POST", "/astara/v1/hosts/join-tokens", {"ttl_s": ttl_s})
    typer.echo(created["token"])
    console.print(f"expires at {created['expires_at']}", style="dim", highlight=False)
