"""`astara`: the operator CLI (thin: it calls APIs, never touches state itself)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.table import Table

from astara import __version__
from astara.agent.client import AgentClient, AgentError
from astara.api.settings import HA_NETWORK_CIDR
from astara.appliance.schema import DEFAULT_ADVERT_MS, ApplianceConfig
from astara.cli.common import StateDirOption, TokenOption, UrlOption, api, console
from astara.cli.hosts import host_cli

cli = typer.Typer(add_completion=False, help="Astara: open network-service orchestration.")
agent_cli = typer.Typer(add_completion=False, help="Inspect an astara-agent directly.")
cli.add_typer(agent_cli, name="agent")
project_cli = typer.Typer(add_completion=False, help="Projects and their credentials.")
cli.add_typer(project_cli, name="project")

router_cli = typer.Typer(add_completion=False, help="Routers as the orchestrator sees them.")
cli.add_typer(router_cli, name="router")
port_cli = typer.Typer(add_completion=False, help="Plug ports into workload namespaces.")
cli.add_typer(port_cli, name="port")
appliance_cli = typer.Typer(
    add_completion=False,
    help="Every appliance: routers', networks' DHCP appliances (dhcp-NETWORK_ID) and load"
    " balancers' (lb-LOADBALANCER_ID).",
)
cli.add_typer(appliance_cli, name="appliance")
balancer_cli = typer.Typer(
    add_completion=False, help="Load balancers as the orchestrator sees them."
)
cli.add_typer(balancer_cli, name="lb")
cli.add_typer(host_cli, name="host")


@project_cli.command("create")
def project_create(
    name: str,
    admin: Annotated[
        bool, typer.Option("--admin", help="May see and act for every project")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Create a project; its token is printed once (only its digest is kept)."""
    created = api(
        url, token, state_dir, "POST", "/astara/v1/projects", {"name": name, "admin": admin}
    )
    console.print(f"project {created['project']['name']} ({created['project']['id']})")
    typer.echo(created["token"])


@project_cli.command("list")
def project_list(
    url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Projects, with their ids."""
    table = Table("name", "id", "admin", "created")
    for project in api(url, token, state_dir, "GET", "/astara/v1/projects")["projects"]:
        table.add_row(
            project["name"], project["id"], "yes" if project["admin"] else "", project["created_at"]
        )
    console.print(table)


@project_cli.command("delete")
def project_delete(
    name: str, url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Delete a project (and its credentials); refused while it owns resources."""
    api(url, token, state_dir, "DELETE", f"/astara/v1/projects/{name}")
    console.print(f"project {name} deleted")


def _event_rows(events: list[dict[str, Any]]) -> Table:
    table = Table("sequence", "time", "resource", "id", "project", "action")
    for event in events:
        table.add_row(
            str(event["sequence"]),
            event["created_at"],
            event["resource_type"],
            event["resource_id"],
            event["project_id"],
            event["action"],
        )
    return table


@cli.command()
def events(
    since: Annotated[int, typer.Option(help="Only events after this sequence number")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """The outbox: every committed change, in order."""
    while True:
        found = api(url, token, state_dir, "GET", f"/astara/v1/events?since={since}")["events"]
        if found or not follow:
            console.print(_event_rows(found))
        if found:
            since = found[-1]["sequence"]
        if not follow:
            return
        time.sleep(1)


NameArgument = Annotated[str, typer.Argument(help="Its id or name")]
RenderedOption = Annotated[
    bool,
    typer.Option("--rendered", help="Only the exact files its appliance runs, as text"),
]


def _state(shown: dict[str, Any]) -> str:
    """The lifecycle state, and whether an operator paused it (its project's pause included)."""
    return str(shown["state"]) + (
        " (paused)" if shown["paused"] and shown["state"] != "paused" else ""
    )


def _list_command(
    group: typer.Typer,
    collection: str,
    columns: dict[str, Callable[[dict[str, Any]], str]],
    help_text: str,
) -> None:
    """`GROUP list`: a table of `/astara/v1/COLLECTION`, a row each."""

    def command(
        url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
    ) -> None:
        table = Table(*columns)
        for shown in api(url, token, state_dir, "GET", f"/astara/v1/{collection}")[collection]:
            table.add_row(*(cell(shown) for cell in columns.values()))
        console.print(table)

    command.__doc__ = help_text
    group.command("list")(command)


def _print_files(files: dict[str, str | None]) -> None:
    """Each non-empty file under a rule with its name, as it is."""
    for name, text in files.items():
        if text:
            console.rule(name)
            console.print(text, markup=False, highlight=False, soft_wrap=True)


def _show_command(group: typer.Typer, collection: str, member: str, help_text: str) -> None:
    """`GROUP show NAME [--rendered]`: the operators' view as JSON, or only
    the files its appliance runs as the agent rendered them."""

    def command(
        name: NameArgument,
        rendered: RenderedOption = False,
        url: UrlOption = None,
        token: TokenOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        shown = api(url, token, state_dir, "GET", f"/astara/v1/{collection}/{name}")[member]
        if not rendered:
            console.print_json(json.dumps(shown))
        elif shown["rendered"] is None:
            _fail(f"no rendered files: {shown.get('agent_error') or 'its agent has none'}")
        else:
            _print_files(shown["rendered"].get("files", {}))

    command.__doc__ = help_text
    group.command("show")(command)


def _action_command(
    group: typer.Typer, noun: str, collection: str, member: str, action: str, help_text: str
) -> None:
    """`GROUP ACTION NAME`: an operator's rebuild, debug or manage."""

    def command(
        name: NameArgument,
        url: UrlOption = None,
        token: TokenOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        path = f"/astara/v1/{collection}/{name}/{action}"
        shown = api(url, token, state_dir, "POST", path)[member]
        console.print(f"{noun} {shown['id']}: {action} requested")

    command.__doc__ = help_text
    group.command(action)(command)


def _appliance_commands(
    group: typer.Typer,
    noun: str,
    collection: str,
    member: str,
    columns: dict[str, Callable[[dict[str, Any]], str]],
    help_texts: dict[str, str],
) -> None:
    """One kind's list, show, rebuild, debug and manage (the help of each in `help_texts`)."""
    _list_command(group, collection, columns, help_texts["list"])
    _show_command(group, collection, member, help_texts["show"])
    for action in ("rebuild", "debug", "manage"):
        _action_command(group, noun, collection, member, action, help_texts[action])


_LIFECYCLE_COLUMNS: dict[str, Callable[[dict[str, Any]], str]] = {
    "state": _state,
    "attempts": lambda shown: str(shown["attempts"]),
    "last error": lambda shown: shown["last_error"] or "",
}
_appliance_commands(
    router_cli,
    "router",
    "routers",
    "router",
    {
        "id": itemgetter("id"),
        "name": itemgetter("name"),
        "project": itemgetter("project_id"),
        "status": itemgetter("status"),
        **_LIFECYCLE_COLUMNS,
    },
    {
        "list": "Every router: its Neutron status, lifecycle state and last error.",
        "show": "One router: state, last error, event history, and what its appliance runs.",
        "rebuild": "Rebuild a router's appliance from scratch (also out of ERROR).",
        "debug": "Pause management of a router: the orchestrator leaves it alone.",
        "manage": "Resume management of a router.",
    },
)
_appliance_commands(
    appliance_cli,
    "appliance",
    "appliances",
    "appliance",
    {
        "id": itemgetter("id"),
        "kind": itemgetter("kind"),
        "name": itemgetter("name"),
        "project": itemgetter("project_id"),
        "status": itemgetter("status"),
        **_LIFECYCLE_COLUMNS,
    },
    {
        "list": "Every appliance (kind router, dhcp or loadbalancer): its status, lifecycle"
        " state and last error.",
        "show": "One appliance (a router's id or name, dhcp-NETWORK_ID or lb-LOADBALANCER_ID):"
        " state, last error, history.",
        "rebuild": "Rebuild an appliance from scratch (also out of ERROR).",
        "debug": "Pause management of an appliance: the orchestrator leaves it alone.",
        "manage": "Resume management of an appliance.",
    },
)
_appliance_commands(
    balancer_cli,
    "load balancer",
    "loadbalancers",
    "loadbalancer",
    {
        "id": itemgetter("id"),
        "name": itemgetter("name"),
        "project": itemgetter("project_id"),
        "vip": lambda shown: shown["vip_address"] or "",
        "provisioning": itemgetter("provisioning_status"),
        "operating": itemgetter("operating_status"),
        "state": _state,
        "host": lambda shown: shown["host"] or "",
        "last error": lambda shown: shown["last_error"] or "",
    },
    {
        "list": "Every load balancer: its VIP, Octavia statuses, its appliance's lifecycle"
        " state, host and last error.",
        "show": "One load balancer: its listeners, pools and members, its appliance's state,"
        " host, history, and the haproxy config it runs.",
        "rebuild": "Rebuild a load balancer's appliance from scratch (also out of ERROR).",
        "debug": "Pause management of a load balancer: the orchestrator leaves it alone.",
        "manage": "Resume management of a load balancer.",
    },
)


@router_cli.command("move")
def router_move(
    router: str,
    host: Annotated[str, typer.Option("--host", help="An up, undrained host")],
    url: UrlOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Move a router's appliance to another host (the orchestrator cuts over)."""
    path = f"/astara/v1/routers/{router}/move"
    shown = api(url, token, state_dir, "POST", path, {"host": host})["router"]
    console.print(f"router {shown['id']}: move from {shown['host'] or '-'} to {host} requested")


def _project_action(action: str, help_text: str) -> None:
    def command(
        project: str,
        url: UrlOption = None,
        token: TokenOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        api(url, token, state_dir, "POST", f"/astara/v1/projects/{project}/{action}")
        console.print(f"project {project}: {action}")

    command.__doc__ = help_text
    project_cli.command(action)(command)


_project_action("debug", "Pause management of every router of a project.")
_project_action("manage", "Resume management of a project's routers.")


@port_cli.command("plug")
def port_plug(
    port: str,
    netns: Annotated[str, typer.Option("--netns", help="Namespace (under the agent's prefix)")],
    ifname: Annotated[str, typer.Option(help="Interface name inside it")] = "eth0",
    dhcp: Annotated[bool, typer.Option(help="Take the IPv4 address by DHCP")] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="The host to plug it on (default: the local one)")
    ] = None,
    wait_s: Annotated[float, typer.Option(help="Wait this long for the port to be ACTIVE")] = 60,
    url: UrlOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Stand up a workload on a port: a veth with its MAC and addresses in NETNS."""
    body: dict[str, Any] = {"netns": netns, "ifname": ifname, "dhcp": dhcp}
    if host is not None:
        body["host"] = host
    bound = api(url, token, state_dir, "PUT", f"/astara/v1/ports/{port}/binding", body)
    port_id = bound["binding"]["port_id"]
    deadline = time.monotonic() + wait_s
    while True:
        shown = api(url, token, state_dir, "GET", f"/v2.0/ports/{port_id}")["port"]
        if shown["status"] == "ACTIVE":
            addresses = ", ".join(f["ip_address"] for f in shown["fixed_ips"])
            where = f" on {host}" if host is not None else ""
            console.print(f"port {port_id} plugged into {netns}{where} as {ifname} ({addresses})")
            return
        if time.monotonic() > deadline:
            console.print(f"[red]error:[/red] port {port_id} is not ACTIVE after {wait_s:g}s")
            raise typer.Exit(1)
        time.sleep(0.2)


@port_cli.command("unplug")
def port_unplug(
    port: str, url: UrlOption = None, token: TokenOption = None, state_dir: StateDirOption = None
) -> None:
    """Take a port out of its workload namespace."""
    api(url, token, state_dir, "DELETE", f"/astara/v1/ports/{port}/binding")
    console.print(f"port {port} unplugged")


@cli.command("cleanup")
def cleanup_command(
    url: UrlOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Wipe the host's objects under --prefix with the server and agent stopped"
            " (no API): namespaces and their processes, /etc/netns entries, the runtime dir;"
            " with --state-dir, the local agent's state in STATE_DIR/agent",
        ),
    ] = False,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="With --offline: the agent's prefix")
    ] = None,
    agent_state_dir: Annotated[
        Path | None,
        typer.Option(
            "--agent-state-dir",
            help="With --offline: the --state-dir of an astara-agent run alone, whose state goes",
        ),
    ] = None,
) -> None:
    """Find and remove orphans: appliances, plugs and segments nothing accounts for.
    With --offline: remove everything under a prefix, the server and agent stopped."""
    if offline:
        _cleanup_offline(prefix, state_dir, agent_state_dir)
        return
    if prefix is not None or agent_state_dir is not None:
        _fail("--prefix and --agent-state-dir go with --offline")
    removed = api(url, token, state_dir, "POST", "/astara/v1/cleanup")["removed"]
    console.print("\n".join(removed) if removed else "nothing to remove")


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(1)


def _cleanup_offline(
    prefix: str | None, state_dir: Path | None, agent_state_dir: Path | None
) -> None:
    import os

    from astara.agent.running import running_agents
    from astara.agent.store import remove_state
    from astara.linux import cleanup
    from astara.naming import Names

    if prefix is None:
        _fail("--offline needs --prefix (the agent's, e.g. ast)")
    try:
        Names(prefix)
    except ValueError as error:
        _fail(str(error))
    if state_dir is not None and agent_state_dir is not None:
        _fail("give --state-dir (of astara serve) or --agent-state-dir (of astara-agent), not both")
    if os.geteuid() != 0:
        _fail("cleanup --offline needs root: it deletes namespaces and their processes")
    agent_state = (
        (state_dir / "agent").resolve()
        if state_dir is not None
        else agent_state_dir.resolve()
        if agent_state_dir is not None
        else None
    )
    for running in running_agents():
        if running.prefix == prefix or running.state_dir == agent_state:
            _fail(
                f"{running.kind} (pid {running.pid}) still runs with prefix {running.prefix}"
                f" and state dir {running.state_dir}: stop it first"
            )
    removed = cleanup.remove_all(prefix)
    lines = [
        *(f"namespace {name}" for name in removed["namespaces"]),
        *(f"{cleanup.NETNS_ETC / name}" for name in removed["etc_netns"]),
        *removed["run_dir"],
        *(remove_state(agent_state) if agent_state is not None else []),
    ]
    console.print(
        "\n".join(f"removed {line}" for line in lines)
        if lines
        else f"nothing to remove under prefix {prefix}",
        highlight=False,
    )


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


@cli.command()
def serve(
    state_dir: Annotated[
        Path, typer.Option(envvar="ASTARA_STATE_DIR", help="Database, credentials, runtime files")
    ] = Path("var"),
    listen: Annotated[str, typer.Option(help="HOST:PORT of the tenant API")] = "127.0.0.1:9696",
    db_url: Annotated[
        str | None, typer.Option(envvar="ASTARA_DB_URL", help="Default: SQLite in the state dir")
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            envvar="ASTARA_ROLE",
            help="'all' (the tenant API, an orchestrator and a local agent), 'api' (the API"
            " alone) or 'orchestrator' (an orchestrator, and its status API); several"
            " processes share one PostgreSQL (--db-url)",
        ),
    ] = "all",
    agent: Annotated[
        str | None,
        typer.Option(
            envvar="ASTARA_AGENT",
            help="'local' (a child agent on STATE_DIR/agent.sock: --role all only), unix:PATH"
            " or tcp:HOST:PORT of a running agent, or 'none' (no local agent: hosts join it)."
            " Default: 'local' with --role all, else 'none'",
        ),
    ] = None,
    coordination: Annotated[
        str | None,
        typer.Option(
            envvar="ASTARA_COORDINATION",
            help="tooz URL shared by several orchestrators (etcd3+http://HOST:PORT,"
            " redis://HOST:PORT or redis:///SOCKET); default: this one owns everything",
        ),
    ] = None,
    membership_timeout_s: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds after an orchestrator's last heartbeat to the coordination"
            " server before the others take over its routers and hosts",
        ),
    ] = 10.0,
    host_name: Annotated[
        str | None,
        typer.Option(
            envvar="ASTARA_HOST_NAME",
            help="The local agent's host name (default: this machine's hostname)",
        ),
    ] = None,
    underlay_address: Annotated[
        str | None,
        typer.Option(
            help="The local agent's VXLAN endpoint address (needed once other hosts join)"
        ),
    ] = None,
    physnet: Annotated[
        list[str] | None,
        typer.Option(help="NAME=IFACE: the local host's interface for provider network NAME"),
    ] = None,
    availability_zone: Annotated[
        str, typer.Option(help="The local host's availability zone")
    ] = "nova",
    heartbeat_s: Annotated[
        float, typer.Option(help="Seconds between heartbeats to each host's agent")
    ] = 0.5,
    down_after_s: Annotated[
        float,
        typer.Option(
            help="Seconds without a heartbeat before a host is down and its appliances move"
            " (longer than the agents' --fence-after)"
        ),
    ] = 3.0,
    prefix: Annotated[
        str, typer.Option(envvar="ASTARA_PREFIX", help="Prefix of the local agent's objects")
    ] = "ast",
    resync_s: Annotated[
        float,
        typer.Option(
            help="Seconds between resyncs (each lists every host once and checks every"
            " appliance against the listing)"
        ),
    ] = 20.0,
    settle_s: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds a woken router waits for more changes to fold into one apply"
            " (at most 5 times as long after the first)",
        ),
    ] = 0.04,
    health_s: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Seconds between two full looks at an appliance (its agent's observation"
            " and its record in the database; default: 3 resyncs)",
        ),
    ] = None,
    operators_group: Annotated[
        str | None,
        typer.Option(
            envvar="ASTARA_OPERATORS_GROUP",
            help="NAME or GID of a group whose members may use the local agent's socket"
            " (default: root only)",
        ),
    ] = None,
    vni_range: Annotated[
        str, typer.Option(help="MIN:MAX: the VXLAN VNIs tenant networks are given")
    ] = "1:65535",
    path_mtu: Annotated[
        int,
        typer.Option(help="The underlay's MTU: a flat network's; a VXLAN network's is 50 less"),
    ] = 1500,
    ha_default: Annotated[
        bool,
        typer.Option(
            "--ha-default/--no-ha-default",
            help="Make routers created without 'ha' HA routers (Neutron's l3_ha): two"
            " appliances on two hosts, one active; an HA router needs two up hosts",
        ),
    ] = False,
    ha_network_cidr: Annotated[
        str,
        typer.Option(
            help="The IPv4 range of each project's hidden HA network (Neutron's l3_ha_net_cidr)"
        ),
    ] = HA_NETWORK_CIDR,
    ha_advert_interval_ms: Annotated[
        int,
        typer.Option(
            min=10,
            max=40950,
            help="VRRP's advertisement interval between an HA router's members, in 10 ms"
            " steps: a standby takes over about three of them after the active one fell silent",
        ),
    ] = DEFAULT_ADVERT_MS,
    log_level: Annotated[str, typer.Option()] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="ASTARA_WORKERS",
            help="API processes accepting on the one --listen socket (--role api only):"
            " one process serves on one core",
        ),
    ] = 1,
    control_listen: Annotated[
        str,
        typer.Option(
            envvar="ASTARA_CONTROL_LISTEN",
            help="HOST:PORT of the control listener (TLS: agents join and renew there), or 'none'",
        ),
    ] = "127.0.0.1:9697",
    agent_cert_lifetime_s: Annotated[
        int, typer.Option(min=10, help="Lifetime of the certificates agents get (seconds)")
    ] = 30 * 86400,
    metadata_url: Annotated[
        str | None,
        typer.Option(
            envvar="ASTARA_METADATA_URL",
            help="The local agent's metadata backend (Nova's metadata API), which instances"
            " reach through 169.254.169.254 (default: none)",
        ),
    ] = None,
    metadata_secret_file: Annotated[
        Path | None,
        typer.Option(
            envvar="ASTARA_METADATA_SECRET_FILE",
            help="The file (mode 0600) of the secret the local agent signs metadata requests"
            " with; read by the agent only",
        ),
    ] = None,
) -> None:
    """Serve the Neutron v2.0 tenant API, the orchestrator and a local agent."""
    import logging
    import socket
    from datetime import timedelta
    from functools import partial

    from astara import pki
    from astara.agent.child import AgentChild
    from astara.agent.client import AgentClient
    from astara.agent.tls import ClientTLS
    from astara.api import workers as api_workers
    from astara.api.app import create_app, now
    from astara.api.bootstrap import ensure_admin
    from astara.api.control import ControlListener, control_context
    from astara.api.segments import ensure_segments
    from astara.api.settings import ApiSettings, check_ha_network_cidr, parse_vni_range
    from astara.api.trust import Authority
    from astara.db.engine import make_engine, session_factory, sqlite_url
    from astara.db.migrate import upgrade
    from astara.linux.process import become_subreaper
    from astara.orchestrator.coordination import Coordinator
    from astara.orchestrator.reconciler import Orchestrator

    if role not in ("all", "api", "orchestrator"):
        raise typer.BadParameter("expected all, api or orchestrator", param_hint="--role")
    if agent is None:
        agent = "local" if role == "all" else "none"
    if agent == "local" and role != "all":
        # A child agent dies with its parent: one orchestrator of several
        # would take a host down with it. Hosts join instead.
        raise typer.BadParameter(
            "a local agent runs only with --role all: start astara-agent and join it,"
            " or give its unix:PATH",
            param_hint="--agent",
        )
    if (metadata_url or metadata_secret_file) and agent != "local":
        raise typer.BadParameter(
            "the local agent's: give other hosts' agents theirs", param_hint="--metadata-url"
        )
    if coordination is not None and role == "api":
        raise typer.BadParameter("only orchestrators coordinate", param_hint="--coordination")
    if workers > 1 and role != "api":
        # The orchestrator is poked in its own process; workers run the API alone.
        raise typer.BadParameter("several workers serve --role api only", param_hint="--workers")
    orchestrate = role != "api"
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter("expected HOST:PORT", param_hint="--listen")
    if heartbeat_s <= 0 or down_after_s <= heartbeat_s:
        raise typer.BadParameter(
            "expected 0 < --heartbeat-s < --down-after-s", param_hint="--down-after-s"
        )
    control_host, _, control_port = control_listen.rpartition(":")
    if control_listen != "none" and (not control_host or not control_port.isdigit()):
        raise typer.BadParameter("expected HOST:PORT or none", param_hint="--control-listen")
    try:
        check_ha_network_cidr(ha_network_cidr)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--ha-network-cidr") from error
    if ha_advert_interval_ms % 10:
        raise typer.BadParameter(
            f"{ha_advert_interval_ms}: VRRPv3 counts in 10 ms steps",
            param_hint="--ha-advert-interval-ms",
        )
    try:
        settings = ApiSettings(
            *parse_vni_range(vni_range),
            path_mtu=path_mtu,
            ha_default=ha_default,
            ha_network_cidr=ha_network_cidr,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--vni-range/--path-mtu") from error
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    db_url = db_url or sqlite_url(state_dir.resolve())
    engine = make_engine(db_url)
    upgrade(engine)
    with session_factory(engine).begin() as session:
        ensure_segments(session, settings)  # networks from before segments get their VNIs
    ensure_admin(engine, state_dir, f"http://{host}:{port}", now())
    console.print(f"astara: admin credential in {state_dir / 'clouds.yaml'} (cloud 'astara')")
    # The deployment CA (made on first start) and the orchestrator's client
    # certificate for agents that joined: see astara/pki.py.
    pki_dir = state_dir.resolve() / "pki"
    try:
        ca = pki.ensure_ca(pki_dir, now())
        controller_cert, controller_key = pki.ensure_controller_cert(pki_dir, ca, now())
    except (pki.InvalidCertificate, OSError) as error:
        console.print(f"[red]error:[/red] the deployment CA in {pki_dir}: {error}")
        raise typer.Exit(1) from error
    authority = Authority(ca, timedelta(seconds=agent_cert_lifetime_s))
    control: ControlListener | None = None
    if control_listen != "none":
        bare = control_host.strip("[]")
        try:
            control = ControlListener(
                engine,
                authority,
                control_context(pki_dir, ca, bare, now()),
                bare,
                int(control_port),
                log_level,
            )
        except OSError as error:
            console.print(f"[red]error:[/red] cannot listen on {control_listen}: {error}")
            raise typer.Exit(1) from error
        control.start()
        console.print(
            f"astara: control listener on https://{control_listen} (CA hash {authority.ca_hash})"
        )
    child: AgentChild | None = None
    client: AgentClient | None = None
    if agent == "local":
        become_subreaper()  # the agent's daemons outlive it; reap them here
        child = AgentChild(
            state_dir.resolve(),
            prefix,
            log_level=log_level,
            die_with_parent=True,
            operators_group=operators_group,
            args=[
                *(["--underlay-address", underlay_address] if underlay_address else []),
                *(arg for item in physnet or [] for arg in ("--physnet", item)),
                "--availability-zone",
                availability_zone,
                *(["--metadata-url", metadata_url] if metadata_url else []),
                *(
                    ["--metadata-secret-file", str(metadata_secret_file.resolve())]
                    if metadata_secret_file
                    else []
                ),
            ],
        )
        try:
            client = child.start()
        except (RuntimeError, OSError) as error:
            console.print(f"[red]error:[/red] the local agent did not start: {error}")
            console.print("It needs root; `--role api` serves the API alone.")
            raise typer.Exit(1) from error
        child.supervise()
    elif agent != "none":
        client = AgentClient(agent)
    tls = ClientTLS(ca=pki_dir / "ca.crt", cert=controller_cert, key=controller_key)

    def connect(address: str) -> AgentClient:
        """A joined host's agent: mutual TLS with the controller's certificate."""
        return AgentClient(address, tls=tls if address.startswith("https://") else None)

    coordinator = (
        Coordinator(coordination, membership_timeout_s=membership_timeout_s)
        if coordination is not None and orchestrate
        else None
    )
    try:
        orchestrator = (
            Orchestrator(
                engine,
                client,
                connect=connect,
                host_name=host_name or local_host_name(socket.gethostname()),
                heartbeat_s=heartbeat_s,
                down_after_s=down_after_s,
                resync_s=resync_s,
                health_s=health_s,
                settle_s=settle_s,
                owns=coordinator.owns if coordinator is not None else None,
                member=coordinator.member if coordinator is not None else "",
                ha_advert_ms=ha_advert_interval_ms,
            )
            if orchestrate
            else None
        )
    except ValueError as error:  # the local host's name is a joined host's
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    try:
        if orchestrator is not None:
            # With a coordinator: owning nothing until it has joined, then
            # told to take over its share (a membership change).
            orchestrator.start()
        if coordinator is not None and orchestrator is not None:
            orchestrator.coordination = coordinator.status
            coordinator.on_change = orchestrator.rebalance
            coordinator.on_resume = partial(orchestrator.rebalance, take_over=False)
            try:
                coordinator.start()
            except Exception as error:  # tooz's errors: unreachable, bad URL, ...
                console.print(f"[red]error:[/red] coordination at {coordinator.shown_url}: {error}")
                raise typer.Exit(1) from error
            console.print(f"astara: orchestrator {coordinator.member} at {coordinator.shown_url}")
        app = create_app(
            engine,
            agent=client,
            orchestrator=orchestrator,
            settings=settings,
            ca_hash=authority.ca_hash,
        )
        if workers == 1:
            api_workers.serve(app, log_level, host=host, port=int(port))
        else:
            sock = api_workers.listening_socket(host, int(port))
            others = api_workers.start(
                sock, workers - 1, db_url, settings, authority.ca_hash, log_level
            )
            try:
                api_workers.serve(app, log_level, sock)
            finally:
                api_workers.stop(others)
    finally:
        # First of all: the agent ending from here on is the shutdown, not a
        # crash to restart (the orchestrator can take a while to stop).
        if child is not None:
            child.stop_supervising()
        if control is not None:
            control.stop()
        if orchestrator is not None:
            orchestrator.stop()
        if coordinator is not None:
            coordinator.stop()  # leaves the group: the others take over at once
        if child is not None:
            child.stop()  # the appliances keep running; the next start adopts them


def local_host_name(hostname: str) -> str:
    """The local host's default name: the hostname's first label, as a host
    name may be (pki.check_host_name: at most 64 of [A-Za-z0-9.-])."""
    label = re.sub(r"[^A-Za-z0-9-]", "-", hostname.split(".")[0])[:64].strip("-")
    return label or "local"


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
    _print_files(_call(agent, "GET", f"/v1/appliances/{appliance_id}/rendered")["files"])


def main() -> None:
    cli()
