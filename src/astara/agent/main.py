"""`astara-agent`: serve the v1 agent API on a unix socket or TCP."""

from __future__ import annotations

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
    app = create_app(AgentSettings(state_dir=state_dir.resolve(), prefix=prefix, run_dir=run_dir))
    if listener is not None:
        uvicorn.run(
            app, fd=listener.fileno(), http=peer_checked_protocol(policy), log_level=log_level
        )
    else:
        uvicorn.run(app, host=where.host, port=where.port, log_level=log_level)


def main() -> None:
    cli()
