"""The actions an apply is made of: typed, frozen, and worded for people.

`appliance.plan` decides which (a pure function), `appliance.execute`
carries them out in order. `str(Done)` is how the agent's API and log word an
action that changed something ("nftables: set elements updated").
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Nexthop = ipaddress.IPv4Address | ipaddress.IPv6Address

# Inside an appliance: forward both families (unless it must not: a DHCP
# appliance, an admin-down router), skip DAD (addresses come from the control
# plane), never autoconfigure from someone else's RAs.
APPLIANCE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.forwarding": "1",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
}


def appliance_sysctls(forwarding: bool) -> dict[str, str]:
    """The namespace's sysctls; without forwarding the kernel routes nothing
    (the ruleset's forward chain drops it too: two locks on one door)."""
    if forwarding:
        return dict(APPLIANCE_SYSCTLS)
    off = (
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.default.forwarding",
    )
    return {**APPLIANCE_SYSCTLS, **dict.fromkeys(off, "0")}


# The files of the run directory the last load of the ruleset left: the text
# loaded, then the kernel's listing of the table right after, then the
# namespace's nft genid read just before that listing (while it has not
# moved, the table is still exactly that listing).
RULESET_LOADED = "nftables.nft"
RULESET_LISTING = "nftables.live"
RULESET_GENID = "nftables.genid"


def ruleset_digest(text: str) -> str:
    """What `RULESET_LOADED` holds after a floating IP delta instead of the
    text itself (700 KB at 10,000 floating IPs, written on every delta):
    a line naming the text by its SHA-256."""
    return f"# sha256 {hashlib.sha256(text.encode()).hexdigest()}\n"


class DaemonName(StrEnum):
    dnsmasq = "dnsmasq"
    radvd = "radvd"
    haproxy = "haproxy"  # the metadata proxy
    loadbalancer = "loadbalancer"  # a load balancer's haproxy (master-worker)
    conntrackd = "conntrackd"  # an HA router member's connection sync
    keepalived = "keepalived"  # an HA router member's role (VRRP)


# Each daemon's files in the run directory, written before it starts or reloads.
DAEMON_FILES: dict[DaemonName, tuple[str, ...]] = {
    DaemonName.dnsmasq: ("dnsmasq.conf", "dnsmasq.hosts"),
    DaemonName.radvd: ("radvd.conf",),
    DaemonName.haproxy: ("haproxy.cfg",),
    DaemonName.loadbalancer: ("loadbalancer.cfg",),
    DaemonName.conntrackd: ("conntrackd.conf",),
    DaemonName.keepalived: ("keepalived.conf",),
}


@dataclass(frozen=True)
class Changes:
    """What a "make exactly this" action found to change when it ran."""

    added: int
    removed: int

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class RulesetMode(StrEnum):
    load = "load"  # no table yet
    replace_table = "replace"  # the whole table, atomically
    delta = "delta"  # set elements only


@dataclass(frozen=True)
class CreateNamespace:
    namespace: str
    forwarding: bool = True

    def describe(self, changes: Changes | None = None) -> str:
        return f"created namespace {self.namespace}"


@dataclass(frozen=True)
class ConfigureNamespace:
    """Loopback up and the appliance's sysctls, again: a namespace left
    half-made by a crash is repaired. Upkeep, not reported as a change."""

    namespace: str
    forwarding: bool = True

    def describe(self, changes: Changes | None = None) -> str:
        return f"namespace {self.namespace} configured"


@dataclass(frozen=True)
class LoadRuleset:
    """One `nft -f` transaction (`commands`), then `ruleset` (the full text)
    and the kernel's listing are saved, the listing last."""

    mode: RulesetMode
    commands: str = field(repr=False)
    ruleset: str = field(repr=False)

    def describe(self, changes: Changes | None = None) -> str:
        return {
            RulesetMode.load: "nftables: table loaded",
            RulesetMode.replace_table: "nftables: table replaced",
            RulesetMode.delta: "nftables: set elements updated",
        }[self.mode]


@dataclass(frozen=True)
class RemoveLink:
    name: str

    def describe(self, changes: Changes | None = None) -> str:
        return f"removed interface {self.name}"


@dataclass(frozen=True)
class PlugInterface:
    """A veth pair from the network's bridge into the namespace, up, with its
    MTU; `recreate` when it is missing or not the one asked for (its
    addresses and routes are gone with it). `on_wire` None: whether its
    fabric end is up is an HA member's role's to say (the same MACs and
    addresses as its peer's, which alone may be heard): made down (the
    interface has no carrier but keeps its addresses and routes), else
    left as it is."""

    name: str
    network_id: str
    fabric_link: str
    bridge: str
    mac: str
    mtu: int
    recreate: bool
    on_wire: bool | None = True

    def describe(self, changes: Changes | None = None) -> str:
        off = "" if self.on_wire else " (on the wire as its HA role says)"
        if self.recreate:
            return f"plugged interface {self.name} into network {self.network_id}{off}"
        return f"interface {self.name} set up on network {self.network_id}, MTU {self.mtu}{off}"


@dataclass(frozen=True)
class SyncAddresses:
    """Make the link's permanent addresses exactly these (SLAAC's are left,
    and `kept`: keepalived's role address on an HA link)."""

    link: str
    addresses: tuple[Address, ...]
    kept: tuple[Address, ...] = ()

    def describe(self, changes: Changes | None = None) -> str:
        if changes is None:
            return f"{self.link}: {len(self.addresses)} addresses"
        return f"{self.link}: {changes.added} addresses added, {changes.removed} removed"


@dataclass(frozen=True)
class PinNeighbour:
    """A permanent neighbour entry: an HA member's peer on the HA link. A
    member restarted beside a live peer would otherwise resolve it anew
    while the peer's adverts to it go unanswered, and could take the role
    for a moment (the research saw it in 3 of 20 restarts), announcing the
    shared MACs from the wrong host."""

    link: str
    address: ipaddress.IPv4Address
    mac: str

    def describe(self, changes: Changes | None = None) -> str:
        return f"{self.link}: peer {self.address} pinned at {self.mac}"


@dataclass(frozen=True)
class SyncRoutes:
    """Make Astara's routes in the main table exactly these (destination via
    next hop, and the device for a next hop that is on-link outside every
    subnet of it, else None)."""

    routes: tuple[tuple[Network, Nexthop, str | None], ...]

    def describe(self, changes: Changes | None = None) -> str:
        if changes is None:
            return f"routes: {len(self.routes)}"
        return f"routes: {changes.added} set, {changes.removed} removed"


@dataclass(frozen=True)
class SyncFloatingRoutes:
    """Make the local routes answering for floating IPs on the external
    interface exactly these (none without an external interface)."""

    device: str | None
    addresses: tuple[ipaddress.IPv4Address, ...] = field(repr=False)

    def describe(self, changes: Changes | None = None) -> str:
        if changes is None:
            return f"floating IPs answered: {len(self.addresses)}"
        return f"floating IPs answered: {changes.added} added, {changes.removed} removed"


@dataclass(frozen=True)
class ChangeFloatingElements:
    """Floating IPs changed alone (`appliance.floating`): their map elements
    deleted and added in one `nft -f` transaction (`commands`) over the table
    as the agent's last commit left it (its nft genid vouches), without
    checking or listing the whole table; `ruleset` is what is saved for the
    next plan (`ruleset_digest` of the full text now in force)."""

    commands: str = field(repr=False)
    ruleset: str = field(repr=False)

    def describe(self, changes: Changes | None = None) -> str:
        return "nftables: floating IP elements changed in place"


@dataclass(frozen=True)
class ChangeFloatingRoutes:
    """Floating IPs changed alone: the local routes of these floating IPs
    (text, as the config writes them) added and removed, without reading the
    others."""

    device: str
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def describe(self, changes: Changes | None = None) -> str:
        return f"floating IPs answered: {len(self.added)} added, {len(self.removed)} removed"


@dataclass(frozen=True)
class DaemonFile:
    name: str  # in the run directory
    text: str = field(repr=False)


@dataclass(frozen=True)
class StartDaemon:
    """Write `files`, stop the daemon if it runs, start it."""

    daemon: DaemonName
    files: tuple[DaemonFile, ...] = ()

    def describe(self, changes: Changes | None = None) -> str:
        return f"{self.daemon} started"


@dataclass(frozen=True)
class ReloadDaemon:
    """Write `files` and send SIGHUP (dnsmasq re-reads its hosts file, radvd
    its config)."""

    daemon: DaemonName
    files: tuple[DaemonFile, ...] = ()

    def describe(self, changes: Changes | None = None) -> str:
        if self.daemon is DaemonName.dnsmasq:
            return "dnsmasq reloaded hosts"
        return f"{self.daemon} reloaded"


@dataclass(frozen=True)
class StopDaemon:
    """Stop the daemon if it runs and remove its files."""

    daemon: DaemonName
    running: bool

    def describe(self, changes: Changes | None = None) -> str:
        return f"{self.daemon} stopped" if self.running else f"{self.daemon} files removed"


@dataclass(frozen=True)
class ForgetConntrack:
    """Delete the conntrack entries to and from these floating IPs, and
    those from and to these networks (a flow's original direction: what one
    of their hosts reaches through a floating IP is the floating IP's)."""

    addresses: tuple[ipaddress.IPv4Address, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def commands(self) -> list[list[str]]:
        """One `conntrack -D` per address or network and side."""
        return [
            ["conntrack", "-D", selector, str(address)]
            for address in self.addresses
            for selector in ("--orig-dst", "--reply-dst")
        ] + [
            ["conntrack", "-D", "-f", f"ipv{network.version}", selector, str(network)]
            for network in self.networks
            for selector in ("--orig-src", "--orig-dst")  # only these take a CIDR
        ]

    def describe(self, changes: Changes | None = None) -> str:
        parts = []
        if self.addresses:
            parts.append(f"{len(self.addresses)} floating IPs")
        if self.networks:
            parts.append(f"the flows of {len(self.networks)} firewalled networks")
        return f"conntrack: forgot {' and '.join(parts)}"


@dataclass(frozen=True)
class Announce:
    """Gratuitous ARP for `addresses` out of `interface` (MAC `mac`)."""

    interface: str
    mac: str
    addresses: tuple[ipaddress.IPv4Address, ...]

    def describe(self, changes: Changes | None = None) -> str:
        return f"gratuitous ARP for {len(self.addresses)} addresses"


Action = (
    CreateNamespace
    | ConfigureNamespace
    | LoadRuleset
    | RemoveLink
    | PlugInterface
    | SyncAddresses
    | PinNeighbour
    | SyncRoutes
    | SyncFloatingRoutes
    | StartDaemon
    | ReloadDaemon
    | StopDaemon
    | ForgetConntrack
    | Announce
)
Plan = tuple[Action, ...]
# A floating IP delta's plan (`appliance.floating`), carried out by
# `appliance.floating_execute`.
DeltaAction = ChangeFloatingElements | ChangeFloatingRoutes | ForgetConntrack | Announce
DeltaPlan = tuple[DeltaAction, ...]


@dataclass(frozen=True)
class Done:
    """An action carried out that changed something, with what a "make
    exactly this" action found to change; `str()` is the API's wording."""

    action: Action | ChangeFloatingElements | ChangeFloatingRoutes
    changes: Changes | None = None

    def __str__(self) -> str:
        return self.action.describe(self.changes)
