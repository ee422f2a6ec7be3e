"""`astara`: the operator CLI (thin: it calls APIs, never touches state itself)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from astara import __version__
from astara.agent.client import AgentClient, AgentError
from astara.appliance.schema import ApplianceConfig

cli = typer.Typer(add_completion=False, help="Astara: open network-service orchestration.")
agent_cli = typer.Typer(add_completion=False, help="Inspect an astara-agent directly.")
cli.add_typer(agent_cli, name="agent")
console = Console()

AgentOption = Annotated[
    str, typer.Option("--agent", envvar="ASTARA_AGENT", help="unix:PATH or tcp:HOST:PORT")
]


def _call(listen: str, method: str, path: str) -> Any:
    try:
        with AgentClient(listen, timeout_s=30) as client:
            return client.request(method, path)
    except AgentError as error:
        console.print(f"[red]error:[/red] {error.status_code} {error.body}")
        raise typer.Exit(1) from error
    except (OSError, httpx.TransportError) as error:
        console.print(f"[red]error:[/red] cannot reach the agent at {listen}: {error}")
        raise typer.Exit(1) from error


@cli.command()
def version() -> None:
    """Print Astara's version."""
    typer.echo(__version__)


@cli.command("appliance-schema")
def appliance_schema() -> None:
    """Print the JSON Schema of the appliance config (docs/appliance-config.schema.json)."""
    typer.echo(json.dumps(ApplianceConfig.model_json_schema(), indent=2, sort_keys=True))


@agent_cli.command("health")
def agent_health(agent: AgentOption = "unix:var/agent.sock") -> None:
    """The agent's version and host capacity."""
    console.print_json(json.dumps(_call(agent, "GET", "/v1/health")))


@agent_cli.command("appliances")
def agent_appliances(agent: AgentOption = "unix:var/agent.sock") -> None:
    """Appliances on the agent's host, with their observed state."""
    table = Table(
        "id", "state", "generation", "config hash", "interfaces", "floating IPs", "problems"
    )
    for item in _call(agent, "GET", "/v1/appliances")["appliances"]:
        table.add_row(
            item["id"],
            item["state"],
            str(item["generation"]),
            (item["config_hash"] or "")[:12],
            str(len(item["interfaces"])),
            str(item["floating_ips"]),
            "; ".join(item["problems"]),
        )
    console.print(table)


@agent_cli.command("rendered")
def agent_rendered(appliance_id: str, agent: AgentOption = "unix:var/agent.sock") -> None:
    """The exact nftables ruleset and daemon configs an appliance runs."""
    rendered = _call(agent, "GET", f"/v1/appliances/{appliance_id}/rendered")
    for name, text in rendered["files"].items():
        if text:
            console.rule(name)
            console.print(text, markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    cli()
