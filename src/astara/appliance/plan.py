"""What an apply must do, decided as a pure function (layer 1: no I/O).

`plan_apply(previous, config, rendered, observation, …)` turns the config
in force, the new one, its rendering and what the namespace holds now
(`Observation`, read by `appliance.observation`) into a `Plan`: a sequence of
frozen actions (`appliance.actions`) that `appliance.execute` carries out
in order. Every decision an apply takes lives here, so each is tested
without root (tests/unit/test_apply_plan.py):

- the namespace is created if missing, and then nothing of the old appliance
  is trusted (`previous` is forgotten);
- the ruleset goes in before any link, by element delta only when the kernel
  holds exactly what the last load put there, else by one table replace;
- links are removed, (re)created or re-attached only when they differ;
- daemons are (re)started, reloaded (SIGHUP) or stopped from their files'
  contents and whether they run;
- conntrack entries of removed or moved floating IPs are forgotten;
- gratuitous ARP for new floating IPs, and for every external address when
  the external interface is (re)created.

Addresses and routes are "make exactly this" actions: the kernel may drop
routes and addresses of its own accord when a link goes (a planned removal or
re-creation), so their differences are read when the action runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from astara.appliance.actions import (
    Action,
    Announce,
    ConfigureNamespace,
    CreateNamespace,
    DaemonFile,
    DaemonName,
    ForgetConntrack,
    LoadRuleset,
    PinNeighbour,
    Plan,
    PlugInterface,
    ReloadDaemon,
    RemoveLink,
    RulesetMode,
    StartDaemon,
    StopDaemon,
    SyncAddresses,
    SyncFloatingRoutes,
    SyncRoutes,
    ruleset_digest,
)
from astara.appliance.render import Rendered
from astara.appliance.render.nftables import NftRuleset, render_nftables
from astara.appliance.schema import (
    HA_ROLE_ADDRESS,
    ApplianceConfig,
    Firewall,
    FirewallAction,
    Role,
)
from astara.naming import Names, appliance_interface


class NetworkMissing(RuntimeError):
    """An interface's network is not on this host: it cannot be plugged."""


# --- what was observed -----------------------------------------------------------------


@dataclass(frozen=True)
class LinkObserved:
    """An interface inside the appliance's namespace."""

    mac: str
    mtu: int
    up: bool


@dataclass(frozen=True)
class FabricEndObserved:
    """The fabric end of an interface's veth pair."""

    mtu: int
    up: bool
    on_bridge: bool  # attached to its network's bridge


@dataclass(frozen=True)
class RulesetObserved:
    live: str = ""  # `nft list table` now; "" when the table (or the namespace) is missing
    saved_listing: str | None = field(default=None, repr=False)  # RULESET_LISTING
    saved_text: str | None = field(default=None, repr=False)  # RULESET_LOADED


@dataclass(frozen=True)
class DaemonObserved:
    running: bool = False
    files: Mapping[str, str] = field(default_factory=dict, repr=False)  # name → text, if present


@dataclass(frozen=True)
class Observation:
    """What the namespace holds now: only what `plan_apply` decides on."""

    namespace_exists: bool = False
    links: Mapping[str, LinkObserved] = field(default_factory=dict)  # role-prefixed links, by name
    fabric_ends: Mapping[str, FabricEndObserved] = field(
        default_factory=dict
    )  # by fabric link name
    ruleset: RulesetObserved = RulesetObserved()
    daemons: Mapping[DaemonName, DaemonObserved] = field(default_factory=dict)

    def daemon(self, name: DaemonName) -> DaemonObserved:
        return self.daemons.get(name, DaemonObserved())


# --- the planner -----------------------------------------------------------------------


def plan_apply(
    *,
    names: Names,
    appliance_id: str,
    previous: ApplianceConfig | None,
    config: ApplianceConfig,
    rendered: Rendered,
    observation: Observation,
    network_mtus: Mapping[str, int],
    role_links: Collection[str] = (),
    quiet: bool = False,
    held: Collection[DaemonName] = (),
) -> Plan:
    """The actions that converge the observed appliance on `config`, in the
    order they must run. `previous` is the config the namespace was last
    converged on (None for a new appliance, or to trust nothing of it).
    `role_links`: interfaces whose place on the wire the member's role
    decides (an HA router member's: see `appliance.ha`), never an apply: a
    link made for them starts off the wire, one that stands is left as it
    is. `quiet`: announce none of them (the member is not active; it
    announces them when it becomes active). `held`: daemons kept stopped
    (an HA member's keepalived while it is out of the election)."""
    namespace = names.appliance_netns(appliance_id)
    actions: list[Action] = []
    if observation.namespace_exists:
        actions.append(ConfigureNamespace(namespace, config.forwarding))
    else:
        actions.append(CreateNamespace(namespace, config.forwarding))
        previous = None  # nothing of the old appliance survives in a new namespace

    # The ruleset goes in before any link: a packet forwarded before the NAT
    # chains exist would get an untranslated conntrack entry that steady
    # traffic keeps alive. Rules match interfaces by name, so they may come first.
    ruleset = plan_ruleset(rendered.nftables, previous, observation.ruleset)
    if ruleset is not None:
        actions.append(ruleset)

    links = plan_links(names, appliance_id, config, observation, network_mtus, role_links)
    actions += links
    recreated = {a.name for a in links if isinstance(a, PlugInterface) and a.recreate}
    for interface in config.interfaces:
        name = appliance_interface(interface.role.value, interface.mac)
        kept = (HA_ROLE_ADDRESS,) if interface.role is Role.ha else ()
        actions.append(SyncAddresses(name, tuple(interface.addresses), kept))
        if interface.role is Role.ha and config.ha is not None:
            actions.append(PinNeighbour(name, config.ha.peer_address, config.ha.peer_mac))
    external = config.external_interface()
    external_name = appliance_interface(external.role.value, external.mac) if external else None
    actions.append(
        SyncRoutes(
            tuple(
                (r.destination, r.nexthop, external_name if r.onlink else None)
                for r in config.routes
            )
        )
    )
    actions.append(
        SyncFloatingRoutes(
            appliance_interface(external.role.value, external.mac) if external else None,
            tuple(f.floating_ip for f in config.floating_ips) if external else (),
        )
    )
    actions += plan_daemons(rendered, observation, held)
    # Each floating IP as (floating, fixed): a moved one is both gone and added.
    now, before = _floating_pairs(config), _floating_pairs(previous)
    gone = before - now
    forgotten = {floating for floating, _ in gone}
    firewalled = _refiltered_networks(config, previous)
    # A flow through a floating IP is known by it, not by the network's address.
    forgotten |= {
        floating
        for floating, fixed in now
        if any(fixed in network for network in firewalled if network.version == 4)
    }
    if forgotten or firewalled:
        actions.append(ForgetConntrack(tuple(sorted(forgotten)), firewalled))
    actions += [
        a
        for a in plan_announcement(config, now - before, recreated)
        if not (quiet and a.interface in role_links)
    ]
    return tuple(actions)


def plan_ruleset(
    ruleset: NftRuleset, previous: ApplianceConfig | None, observed: RulesetObserved
) -> LoadRuleset | None:
    """Change only set elements when the kernel holds exactly what the last
    load put there: the saved listing equals the live table, and the saved
    ruleset equals the previous config's rendering (it would not after a
    crash between loading and recording, or after an upgrade that renders
    differently). Otherwise replace (or load) the whole table. None: the
    table is already right."""
    live = observed.live
    if previous is not None and live and observed.saved_listing == live:
        before = render_nftables(previous)
        text = before.text()
        if observed.saved_text in (text, ruleset_digest(text)):
            delta = ruleset.delta(before)
            if delta == "":
                return None
            if delta is not None:
                return LoadRuleset(RulesetMode.delta, delta, ruleset.text())
    text = ruleset.text()
    return LoadRuleset(RulesetMode.replace_table if live else RulesetMode.load, text, text)


def plan_links(
    names: Names,
    appliance_id: str,
    config: ApplianceConfig,
    observation: Observation,
    network_mtus: Mapping[str, int],
    role_links: Collection[str] = (),
) -> list[RemoveLink | PlugInterface]:
    """Links no longer in the config go first; then each interface is
    (re)created if missing or not the one asked for, or set up, attached,
    sized and put on the wire if only that differs (`role_links`: whether
    they are on the wire is the role's, not the plan's)."""
    wanted = {appliance_interface(i.role.value, i.mac) for i in config.interfaces}
    actions: list[RemoveLink | PlugInterface] = [
        RemoveLink(name) for name in sorted(observation.links) if name not in wanted
    ]
    for interface in config.interfaces:
        network_mtu = network_mtus.get(interface.network_id)
        if network_mtu is None:
            raise NetworkMissing(f"network {interface.network_id} is not on this host")
        name = appliance_interface(interface.role.value, interface.mac)
        fabric_link = names.appliance_fabric_link(appliance_id, interface.mac)
        mtu = interface.mtu or network_mtu
        inside = observation.links.get(name) if observation.namespace_exists else None
        end = observation.fabric_ends.get(fabric_link)
        recreate = inside is None or end is None or inside.mac != interface.mac
        on_wire = None if name in role_links else True
        settled = (
            inside is not None
            and end is not None
            and inside.up
            and inside.mtu == mtu
            and (end.up or on_wire is None)
            and end.mtu == mtu
            and end.on_bridge
        )
        if recreate or not settled:
            actions.append(
                PlugInterface(
                    name=name,
                    network_id=interface.network_id,
                    fabric_link=fabric_link,
                    bridge=names.bridge(interface.network_id),
                    mac=interface.mac,
                    mtu=mtu,
                    recreate=recreate,
                    on_wire=on_wire,
                )
            )
    return actions


def settled(
    *,
    names: Names,
    appliance_id: str,
    config: ApplianceConfig,
    observation: Observation,
    network_mtus: Mapping[str, int],
    daemons_expected: Mapping[DaemonName, bool],
    role_links: Collection[str] = (),
) -> bool:
    """Whether the appliance, already converged on `config`, still stands as
    it was left, by what an observation reads cheaply: its namespace, every
    interface (and its fabric end) as `plan_links` wants it, the ruleset the
    last load left (the genid tells, without a listing), and each daemon
    running exactly when expected, with its files. Addresses and routes are
    not read here (a full converge reads them). True: an unchanged PUT has
    nothing to do."""
    if not observation.namespace_exists:
        return False
    try:
        if plan_links(names, appliance_id, config, observation, network_mtus, role_links):
            return False
    except NetworkMissing:
        return False
    ruleset = observation.ruleset
    if not ruleset.live or ruleset.live != ruleset.saved_listing:
        return False
    for name, expected in daemons_expected.items():
        daemon = observation.daemon(name)
        if daemon.running != expected or (expected and not daemon.files):
            return False
    return True


def plan_daemons(
    rendered: Rendered, observation: Observation, held: Collection[DaemonName] = ()
) -> list[StartDaemon | ReloadDaemon | StopDaemon]:
    """Each daemon started if it is not running; when its files changed,
    restarted if one of `restart_on` changed (its whole config for haproxy,
    the metadata proxy; `dnsmasq.conf`), else reloaded (dnsmasq's hosts by
    SIGHUP, radvd's config, a load balancer's hitless reload); stopped, its
    files removed, when it has nothing to serve. A recreated interface needs
    none of them: dnsmasq and radvd follow their interfaces by name through
    netlink (tested with root), haproxy listens on every address."""
    wanted: list[tuple[DaemonName, dict[str, str], set[str] | None]] = [
        (
            DaemonName.dnsmasq,
            {"dnsmasq.conf": rendered.dnsmasq.conf, "dnsmasq.hosts": rendered.dnsmasq.hosts}
            if rendered.dnsmasq.enabled
            else {},
            {"dnsmasq.conf"},
        ),
        (DaemonName.radvd, {"radvd.conf": rendered.radvd} if rendered.radvd else {}, set()),
        (
            DaemonName.haproxy,
            {"haproxy.cfg": rendered.haproxy} if rendered.haproxy else {},
            None,  # its config changes only with the host's setting: restarted
        ),
        (
            DaemonName.loadbalancer,
            {"loadbalancer.cfg": rendered.loadbalancer} if rendered.loadbalancer else {},
            set(),  # a hitless reload: the listening sockets pass to the new worker
        ),
        # conntrackd before keepalived: a member is never active without its sync.
        (
            DaemonName.conntrackd,
            {"conntrackd.conf": rendered.conntrackd} if rendered.conntrackd else {},
            None,
        ),
        (
            DaemonName.keepalived,
            {"keepalived.conf": rendered.keepalived} if rendered.keepalived else {},
            set(),  # SIGHUP: a reload keeps the role (a restart would give it up)
        ),
    ]
    actions: list[StartDaemon | ReloadDaemon | StopDaemon] = []
    for name, files_wanted, restart_on in wanted:
        observed = observation.daemon(name)
        if not files_wanted or name in held:
            if observed.running or observed.files:
                actions.append(StopDaemon(name, running=observed.running))
            continue
        files = _changed_files(observed, files_wanted)
        restart = restart_on is None or any(f.name in restart_on for f in files)
        if not observed.running or (files and restart):
            actions.append(StartDaemon(name, files))
        elif files:
            actions.append(ReloadDaemon(name, files))
    return actions


def plan_announcement(
    config: ApplianceConfig,
    added: set[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]],
    recreated: set[str],
) -> list[Announce]:
    """Gratuitous ARP for floating IPs added or moved (`added`: their
    (floating, fixed) pairs); for every IPv4 address of an interface that
    is (re)created, and the floating IPs with the external one. An appliance
    built anew (on another host, say) so tells every switch on its networks,
    VXLAN forwarding tables on other hosts included, where its MACs are now."""
    announcements: list[Announce] = []
    for interface in config.interfaces:
        name = appliance_interface(interface.role.value, interface.mac)
        external = interface.role.value == "external"
        if name in recreated:
            addresses = [
                a.ip for a in interface.addresses if isinstance(a, ipaddress.IPv4Interface)
            ]
            if external:
                addresses += [f.floating_ip for f in config.floating_ips]
        elif external:
            addresses = sorted({floating for floating, _ in added})
        else:
            continue
        if addresses:
            announcements.append(Announce(name, interface.mac, tuple(addresses)))
    return announcements


def _changed_files(observed: DaemonObserved, wanted: dict[str, str]) -> tuple[DaemonFile, ...]:
    return tuple(
        DaemonFile(name, text) for name, text in wanted.items() if observed.files.get(name) != text
    )


def _floating_pairs(
    config: ApplianceConfig | None,
) -> set[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]]:
    if config is None:
        return set()
    return {(f.floating_ip, f.fixed_ip) for f in config.floating_ips}


def _refiltered_networks(
    config: ApplianceConfig, previous: ApplianceConfig | None
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks behind interfaces whose firewall became stricter
    (added, changed, set down): their tracked flows end, so that what the new
    rules refuse stops, as Neutron's driver ends the flows of changed rules;
    what they still allow is picked up again by its next packet. A change
    that only lets more through (a firewall removed, allow rules added)
    ends nothing."""
    if previous is None:
        return ()
    before = {mac: f for f in previous.firewalls for mac in f.interfaces}
    stricter = {
        mac
        for firewall in config.firewalls
        for mac in firewall.interfaces
        if not _only_looser(before.get(mac), firewall)
    }
    return tuple(
        sorted(
            {
                address.network
                for interface in config.interfaces
                if interface.mac in stricter
                for address in interface.addresses
            },
            key=lambda n: (n.version, n),
        )
    )


def _only_looser(before: Firewall | None, now: Firewall) -> bool:
    """Whether `now` lets through all that `before` did: as enabled, and each
    direction's rules `before`'s in order with allow rules added (an allow
    only ever turns what a later rule or the final drop refused into a pass)."""
    if before is None or before.enabled != now.enabled:
        return False
    for direction in ("ingress", "egress"):
        old, new = getattr(before, direction), getattr(now, direction)
        remaining = iter(new)
        for rule in old:
            for candidate in remaining:
                if candidate == rule:
                    break
                if candidate.action is not FirewallAction.allow:
                    return False
            else:
                return False
        if any(rule.action is not FirewallAction.allow for rule in remaining):
            return False
    return True
