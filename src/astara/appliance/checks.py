"""The real tools: which ones this host has, which ones a config needs, and
their own checks of rendered texts, before anything changes.

Schema and semantics catch bad configs first; the tools' checks are the last
line: if `nft -c`, `dnsmasq --test` or `radvd --configtest` refuses a text,
the apply is refused with a field error under `rendered`, and nothing changes.
A config that needs a tool this host lacks is refused with MissingTool, also
before anything changes.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from astara.appliance.render import Rendered
from astara.appliance.schema import ApplianceConfig, FieldError
from astara.linux import nft
from astara.linux.run import CommandError, MissingTool, find_tool, run


@dataclass(frozen=True)
class Tool:
    name: str
    version_argv: tuple[str, ...]
    purpose: str


# Every program the agent execs (grep for run([...]) and Daemon.start).
TOOLS = {
    tool.name: tool
    for tool in (
        Tool("ip", ("ip", "-V"), "namespaces, links, addresses and routes (iproute2)"),
        Tool("sysctl", ("sysctl", "--version"), "per-namespace sysctls (procps)"),
        Tool("nft", ("nft", "--version"), "appliance firewall, SNAT and floating IPs (nftables)"),
        Tool(
            "conntrack",
            ("conntrack", "--version"),
            "ending the flows of removed floating IPs and changed firewalls (conntrack-tools)",
        ),
        Tool("dnsmasq", ("dnsmasq", "--version"), "DHCP on appliance subnets"),
        Tool("radvd", ("radvd", "--version"), "IPv6 router advertisements (SLAAC)"),
        Tool("haproxy", ("haproxy", "-v"), "the metadata proxy and load balancers"),
        Tool("keepalived", ("keepalived", "--version"), "HA routers' roles (VRRP)"),
        Tool("conntrackd", ("conntrackd", "-v"), "HA routers' connection sync"),
        Tool("ping", ("ping", "-V"), "a demoted HA member looking for its peer (iputils)"),
        Tool(
            "start-stop-daemon",
            ("start-stop-daemon", "--version"),
            "starting conntrackd in the background (dpkg)",
        ),
        Tool("env", ("env", "--version"), "starting the DHCP client of ports (coreutils)"),
        Tool("busybox", ("busybox", "--help"), "the DHCP client (udhcpc) of ports with dhcp"),
        Tool("dhcpcd", ("dhcpcd", "--version"), "the DHCPv6 client of ports with dhcpv6"),
        Tool("mount", ("mount", "--version"), "the DHCPv6 client's private directories"),
    )
}

_VERSION = re.compile(r"\d+(?:\.\d+)+")


def parse_version(output: str) -> str | None:
    """The first dotted number of a tool's version banner ("iproute2-6.1.0"
    → "6.1.0", "Dnsmasq version 2.90" → "2.90")."""
    match = _VERSION.search(output)
    return match.group(0) if match else None


@dataclass(frozen=True)
class Found:
    path: str
    version: str | None


def probe(tool: Tool) -> Found | None:
    """Where `tool` is and its version, or None if it is not installed."""
    path = find_tool(tool.name)
    if path is None:
        return None
    try:
        result = run(list(tool.version_argv), check=False, timeout_s=10)
    except OSError:  # MissingTool among them: removed since `find_tool` looked
        return None
    return Found(path, parse_version(result.stdout + result.stderr))


def missing(tools: list[str]) -> list[str]:
    """Those of `tools` that are not installed, in order."""
    return [tool for tool in tools if find_tool(tool) is None]


def require(tools: list[str]) -> None:
    """Raise MissingTool for the first of `tools` that is not installed."""
    for tool in missing(tools):
        raise MissingTool(tool)


def rendered_tools(rendered: Rendered) -> list[str]:
    """The tools that check and run these rendered texts."""
    return [
        "nft",
        *(["dnsmasq"] if rendered.dnsmasq.enabled else []),
        *(["radvd"] if rendered.radvd else []),
        *(["haproxy"] if rendered.haproxy or rendered.loadbalancer else []),
        *(["keepalived"] if rendered.keepalived else []),
        *(["conntrackd", "start-stop-daemon"] if rendered.conntrackd else []),
    ]


def appliance_tools(
    config: ApplianceConfig, rendered: Rendered, previous: ApplianceConfig | None
) -> list[str]:
    """Every tool applying `config` over `previous` runs."""
    forgets = any(c is not None and (c.floating_ips or c.firewalls) for c in (config, previous))
    return ["ip", "sysctl", *rendered_tools(rendered), *(["conntrack"] if forgets else [])]


def _refused(name: str, tool: str, message: str) -> FieldError:
    return FieldError(("rendered", name), f"{tool}: {message.strip()}", "tool_check")


def tool_checks(rendered: Rendered, netns: str) -> list[FieldError]:
    """Every refusal of every tool; `netns` is where `nft -c` talks to the kernel.
    Raises MissingTool first if a tool the texts need is not installed."""
    require(rendered_tools(rendered))
    errors: list[FieldError] = []
    try:
        nft.check(rendered.nftables.text(), netns)
    except CommandError as error:
        errors.append(_refused("nftables", "nft -c", error.stderr))
    with tempfile.TemporaryDirectory(prefix="astara-check-") as scratch:
        checks = [
            ("dnsmasq.conf", rendered.dnsmasq.conf, ["dnsmasq", "--test", "--conf-file={}"]),
            ("radvd.conf", rendered.radvd, ["radvd", "--configtest", "-C", "{}"]),
            # Not `-q`: haproxy 2.6 then says nothing of why it refuses.
            ("haproxy.cfg", rendered.haproxy, ["haproxy", "-c", "-f", "{}"]),
            ("loadbalancer.cfg", rendered.loadbalancer, ["haproxy", "-c", "-f", "{}"]),
        ]
        for name, text, argv in checks:
            if not text:
                continue
            path = Path(scratch) / name
            path.write_text(text)
            result = run([arg.format(path) for arg in argv], check=False)
            if result.returncode != 0:
                reason = result.stderr
                if argv[0] == "haproxy":
                    reason = haproxy_alerts(reason).replace(str(path), name)
                errors.append(_refused(name, " ".join(argv[:2]), reason))
    return errors


# "[ALERT]    (1234) : config : parsing [x.cfg:17] : timer overflow ..."
_ALERT = re.compile(r"^\[ALERT\]\s+\(\d+\)\s*:\s*(?:config\s*:\s*)?(.*)$")


def haproxy_alerts(stderr: str) -> str:
    """What haproxy refused, from its check's output: its alerts, without
    its notices or its pid (the reason a person reads)."""
    alerts = [found[1] for line in stderr.splitlines() if (found := _ALERT.match(line.strip()))]
    return "; ".join(alerts) if alerts else stderr
