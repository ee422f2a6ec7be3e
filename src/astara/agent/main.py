"""`astara-agent`: serve the v1 agent API on a unix socket or TCP."""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import uvicorn

from astara.agent.access import (
    AccessPolicy,
    UnknownGroup,
    bind_unix_socket,
    parse_group,
    peer_checked_protocol,
)
from astara.agent.join import Joined, JoinError, JoinRequest, Renewer, TlsFiles, read_joined
from astara.agent.join import join as join_deployment
from astara.agent.listen import Listen, parse_advertise, parse_listen, url_host
from astara.agent.metadata import SecretError, load_secret
from astara.agent.server import AgentSettings, create_app
from astara.agent.tls import (
    AGENT_LOOP,
    bound_socket,
    only_role,
    peer_protocol,
    server_context,
    tls_server,
)
from astara.linux.process import become_subreaper, start_reaper
from astara.model.fabric import check_ifname, check_physnet
from astara.pki import check_host_name

log = logging.getLogger(__name__)

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
    # -- joining a deployment (trust: agent/join.py) --
    join: Annotated[
        str | None,
        typer.Option(help="https://CONTROLLER:PORT: join its deployment (with --token)"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="A join token (astara host join-token)", envvar="ASTARA_JOIN_TOKEN"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="This host's name (default: hostname)")] = None,
    advertise: Annotated[
        str | None,
        typer.Option(help="ADDR:PORT the controller reaches this agent at (default: --listen's)"),
    ] = None,
    # -- this host in the fabric --
    underlay_address: Annotated[
        str | None, typer.Option(help="This host's VXLAN endpoint address (in its namespace)")
    ] = None,
    physnet: Annotated[
        list[str] | None,
        typer.Option(help="NAME=IFACE: the host interface of provider network NAME (repeatable)"),
    ] = None,
    availability_zone: Annotated[str, typer.Option(help="This host's availability zone")] = "nova",
    fence_after: Annotated[
        float | None,
        typer.Option(
            help="Seconds without a request before appliances are withdrawn from the provider"
            " networks (0: never; default 2 on tcp, never on unix)"
        ),
    ] = None,
    metadata_url: Annotated[
        str | None,
        typer.Option(
            help="http(s)://HOST:PORT of the metadata backend (Nova's metadata API) this host's"
            " instances reach through 169.254.169.254 (default: no metadata service)",
            envvar="ASTARA_METADATA_URL",
        ),
    ] = None,
    metadata_secret_file: Annotated[
        Path | None,
        typer.Option(
            help="The file (mode 0600) of the secret metadata requests are signed with"
            " (Nova's metadata_proxy_shared_secret)",
            envvar="ASTARA_METADATA_SECRET_FILE",
        ),
    ] = None,
) -> None:
    """Serve the agent API until interrupted."""
    files = TlsFiles(state_dir / "tls")
    joining = join is not None or token is not None or files.joined.exists()
    try:
        where: Listen = parse_listen(listen, tls=joining)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--listen") from error
    if joining and where.path is not None:
        raise typer.BadParameter("a joined agent listens on tcp:ADDR:PORT", param_hint="--listen")
    try:
        policy = AccessPolicy(None if operators_group is None else parse_group(operators_group))
    except UnknownGroup as error:
        raise typer.BadParameter(str(error), param_hint="--operators-group") from error
    underlay, physnets = _uplinks(underlay_address, physnet or [])
    _check_metadata(metadata_url, metadata_secret_file)
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
    joined = (
        joined_or_join(
            files,
            join,
            token,
            name,
            advertise or f"{url_host(where.host)}:{where.port}",
            underlay_address,
            physnets,
            availability_zone,
        )
        if joining
        else None
    )
    become_subreaper()
    start_reaper()
    # Bound here, not by uvicorn (which leaves it 0666), and before anything
    # could start a thread (the bind sets the umask): see agent/access.py.
    listener = bind_unix_socket(where.path, policy) if where.path is not None else None
    app = create_app(
        AgentSettings(
            state_dir=state_dir.resolve(),
            prefix=prefix,
            run_dir=run_dir,
            underlay_address=underlay,
            physnets=physnets,
            availability_zone=availability_zone,
            fence_after_s=fence_after or None,
            metadata_url=metadata_url,
            metadata_secret_file=metadata_secret_file.resolve() if metadata_secret_file else None,
        )
    )
    # What exists now (modules, the app: about 90,000 objects) lives as
    # long as the agent: out of the collector's sight, so that a full
    # collection walks only what applies made (a 10,000-floating-IP config:
    # 50,000 objects), not those too (about 80 ms of CPU each time).
    gc.freeze()
    if listener is not None:
        uvicorn.run(
            app,
            fd=listener.fileno(),
            http=peer_checked_protocol(policy),
            loop=AGENT_LOOP,
            log_level=log_level,
        )
    elif joined is not None:
        serve_tls(app, files, joined, where, log_level)
    else:
        uvicorn.run(
            app, host=where.host, port=where.port, http="h11", loop=AGENT_LOOP, log_level=log_level
        )


def _check_metadata(url: str | None, secret_file: Path | None) -> None:
    """A metadata backend is an http(s) URL and comes with a usable secret."""
    if url is None:
        if secret_file is not None:
            raise typer.BadParameter(
                "goes with --metadata-url", param_hint="--metadata-secret-file"
            )
        return
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter("an http:// or https:// URL", param_hint="--metadata-url")
    if secret_file is None:
        raise typer.BadParameter(
            "a metadata backend needs the shared secret", param_hint="--metadata-secret-file"
        )
    try:
        load_secret(secret_file)
    except SecretError as error:
        raise typer.BadParameter(str(error), param_hint="--metadata-secret-file") from error


def joined_or_join(
    files: TlsFiles,
    controller: str | None,
    token: str | None,
    name: str | None,
    advertise: str,
    underlay_address: str | None,
    physnets: dict[str, str],
    availability_zone: str,
) -> Joined:
    """What join.json says, or a join now. Once joined, --join and --token
    are not used (a token is spent); --name and --join, given, must match."""
    joined = read_joined(files)
    if joined is not None:
        if (name is not None and name != joined.name) or (
            controller is not None and controller.rstrip("/") != joined.controller
        ):
            fail(
                f"this agent joined {joined.controller} as {joined.name} ({files.joined}):"
                " remove that directory to join again (after `astara host remove`)"
            )
        if token is not None:
            log.info("already joined as %s: --token is not used", joined.name)
        return joined
    if controller is None or token is None:
        fail("joining needs --join https://CONTROLLER:PORT and --token")
    try:
        parse_advertise(advertise)
        request = JoinRequest(
            controller,
            token,
            check_host_name(name or socket.gethostname()),
            advertise,
            underlay_address,
            physnets,
            availability_zone,
        )
        return join_deployment(files, request)
    except (ValueError, JoinError) as error:
        fail(str(error))


def serve_tls(app: Any, files: TlsFiles, joined: Joined, where: Listen, log_level: str) -> None:
    """The agent API over mutual TLS: clients must present a certificate of
    the deployment's CA with OU=controller; renewed in the background."""
    context = server_context(files.cert, files.key, files.ca, require_client=True)
    # Every admitted request is contact with the controller (Agent.note_contact,
    # the fence's clock, where the Agent has one).
    contact = getattr(app.state.agent, "note_contact", None)
    protocol = peer_protocol(only_role("controller"), contact)
    renewer = Renewer(files, joined, context)
    renewer.start()
    try:
        tls_server(app, context, protocol, log_level).run(
            sockets=[bound_socket(where.host, where.port)]
        )
    finally:
        renewer.stop()


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


def fail(message: str) -> NoReturn:
    typer.echo(f"astara-agent: {message}", err=True)
    raise typer.Exit(1)


def main() -> None:
    cli()
