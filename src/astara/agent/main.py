"""`astara-agent`: serve the v1 agent API on a unix socket or TCP."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from astara.agent.access import (
    AccessPolicy,
    UnknownGroup,
    bind_unix_socket,
    parse_group,
    peer_checked_protocol,
)
from astara.agent.listen import Listen, parse_listen
from astara.agent.server import AgentSettings, create_app
from astara.linux.process import become_subreaper
from astara.model.fabric import check_ifname, check_physnet

cli = typer.Typer(add_completion=False, help="Astara's per-host agent.")


@cli.command()
def serve(
    listen: Annotated[
        str, typer.Option(help="unix:PATH or tcp:HOST:PORT", envvar="ASTARA_AGENT_LISTEN")
    ] = "unix:var/agent.sock",
    state_dir: Annotated[Path, typer.Option(envvar="ASTARA_AGENT_STATE_DIR")] = Path("var/agent"),
    prefix: Annotated[
        str,
        typer.Option(
            help="Prefix of every namespace and link this agent creates", envvar="ASTARA_PREFIX"
        ),
    ] = "ast",
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Runtime files (daemon configs, pid files); default /run/astara/PREFIX"),
    ] = None,
    operators_group: Annotated[
        str | None,
        typer.Option(
            help="NAME or GID of a group whose members may use the unix socket"
            " (default: root only)",
            envvar="ASTARA_OPERATORS_GROUP",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option()] = "info",
    underlay_address: Annotated[
        str | None, typer.Option(help="This host's VXLAN endpoint address (in its namespace)")
    ] = None,
    physnet: Annotated[
        list[str] | None,
        typer.Option(help="NAME=IFACE: the host interface of provider network NAME (repeatable)"),
    ] = None,
    availability_zone: Annotated[str, typer.Option()] = "nova",
    fence_after: Annotated[
        float | None,
        typer.Option(
            help="Seconds without a request before appliances are withdrawn from the provider"
            " networks (0: never; default 2 on tcp, never on unix)"
        ),
    ] = None,
) -> None:
    """Serve the agent API until interrupted."""
    try:
        where: Listen = parse_listen(listen)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--listen") from error
    try:
        policy = AccessPolicy(None if operators_group is None else parse_group(operators_group))
    except UnknownGroup as error:
        raise typer.BadParameter(str(error), param_hint="--operators-group") from error
    uplinks = _uplinks(underlay_address, physnet or [])
    if fence_after is None:
        fence_after = 2.0 if where.path is None else 0.0
    if os.geteuid() != 0:
        typer.echo(
            "astara-agent needs root: it creates namespaces, links and nftables rules", err=True
        )
        raise typer.Exit(1)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    # Bound here, not by uvicorn (which leaves it 0666), and before anything
    # could start a thread (the bind sets the umask): see agent/access.py.
    listener = bind_unix_socket(where.path, policy) if where.path is not None else None
    app = create_app(
        AgentSettings(
            state_dir=state_dir.resolve(),
            prefix=prefix,
            run_dir=run_dir,
            underlay_address=uplinks[0],
            physnets=uplinks[1],
            availability_zone=availability_zone,
            fence_after_s=fence_after or None,
        )
    )
    if listener is not None:
        uvicorn.run(
            app, fd=listener.fileno(), http=peer_checked_protocol(policy), log_level=log_level
        )
    else:
        uvicorn.run(app, host=where.host, port=where.port, log_level=log_level)


def _uplinks(
    underlay: str | None, physnets: list[str]
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, dict[str, str]]:
    try:
        address = ipaddress.ip_address(underlay) if underlay is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--underlay-address") from error
    mappings: dict[str, str] = {}
    for mapping in physnets:
        name, _, interface = mapping.partition("=")
        try:
            check_physnet(name)
            check_ifname(interface)
        except ValueError as error:
            raise typer.BadParameter(f"{mapping!r}: {error}", param_hint="--physnet") from error
        if name in mappings or interface in mappings.values():
            raise typer.BadParameter(f"{mapping!r}: given twice", param_hint="--physnet")
        mappings[name] = interface
    return address, mappings


def main() -> None:
    cli()
