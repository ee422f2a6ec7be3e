"""The apply planner (`appliance.plan`): every decision an apply takes, without root.

Each test starts from an observation of the appliance exactly as applying a
config leaves it (`converged`), changes one thing about the world or the
config, and asserts on the typed plan.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace
from pathlib import PurePath
from typing import Any, TypeVar

import pytest

from astara.appliance.actions import (
    Action,
    Announce,
    Changes,
    ConfigureNamespace,
    CreateNamespace,
    DaemonFile,
    DaemonName,
    Done,
    ForgetConntrack,
    LoadRuleset,
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
    appliance_sysctls,
)
from astara.appliance.plan import (
    DaemonObserved,
    FabricEndObserved,
    LinkObserved,
    NetworkMissing,
    Observation,
    RulesetObserved,
    plan_apply,
    settled,
)
from astara.appliance.render import MetadataProxy, Rendered, render
from astara.appliance.schema import ApplianceConfig
from astara.naming import Names, appliance_interface
from tests.unit.configs import (
    EXTERNAL_MAC,
    NET_A_MAC,
    NET_B_MAC,
    NETWORK_MTUS,
    STATE_DIR,
    representative,
)

NAMES = Names("t")
APPLIANCE = "r1"
LISTING = "table inet astara { # what nft listed after the last load\n}\n"
EXTERNAL = appliance_interface("external", EXTERNAL_MAC)
NET_A = appliance_interface("internal", NET_A_MAC)
NET_B = appliance_interface("internal", NET_B_MAC)

Doc = dict[str, Any]
A = TypeVar("A")
# What a config in force has no reason to do again.
CHANGES = (
    CreateNamespace,
    LoadRuleset,
    RemoveLink,
    PlugInterface,
    StartDaemon,
    ReloadDaemon,
    StopDaemon,
    ForgetConntrack,
    Announce,
)


def config(mutate: Callable[[Doc], None] | None = None) -> ApplianceConfig:
    doc = representative()
    if mutate is not None:
        mutate(doc)
    return ApplianceConfig.model_validate(doc)


# A host that serves metadata: its appliances run haproxy too.
METADATA = MetadataProxy(PurePath("/run/astara/test/metadata/proxy.sock"), APPLIANCE)


def rendered(cfg: ApplianceConfig) -> Rendered:
    return render(cfg, STATE_DIR, NETWORK_MTUS, METADATA)


def converged(cfg: ApplianceConfig) -> Observation:
    """The namespace exactly as applying `cfg` leaves it."""
    texts = rendered(cfg)
    links, ends = {}, {}
    for interface in cfg.interfaces:
        mtu = interface.mtu or NETWORK_MTUS[interface.network_id]
        name = appliance_interface(interface.role.value, interface.mac)
        links[name] = LinkObserved(mac=interface.mac, mtu=mtu, up=True)
        fabric_link = NAMES.appliance_fabric_link(APPLIANCE, interface.mac)
        ends[fabric_link] = FabricEndObserved(mtu=mtu, up=True, on_bridge=True)
    dnsmasq = (
        DaemonObserved(
            running=True,
            files={"dnsmasq.conf": texts.dnsmasq.conf, "dnsmasq.hosts": texts.dnsmasq.hosts},
        )
        if texts.dnsmasq.enabled
        else DaemonObserved()
    )
    radvd = (
        DaemonObserved(running=True, files={"radvd.conf": texts.radvd})
        if texts.radvd
        else DaemonObserved()
    )
    haproxy = DaemonObserved(running=True, files={"haproxy.cfg": texts.haproxy})
    return Observation(
        namespace_exists=True,
        links=links,
        fabric_ends=ends,
        ruleset=RulesetObserved(
            live=LISTING, saved_listing=LISTING, saved_text=texts.nftables.text()
        ),
        daemons={DaemonName.dnsmasq: dnsmasq, DaemonName.radvd: radvd, DaemonName.haproxy: haproxy},
    )


def plan(previous: ApplianceConfig | None, new: ApplianceConfig, observation: Observation) -> Plan:
    return plan_apply(
        names=NAMES,
        appliance_id=APPLIANCE,
        previous=previous,
        config=new,
        rendered=rendered(new),
        observation=observation,
        network_mtus=NETWORK_MTUS,
    )


def of(actions: Plan, kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def one(actions: Plan, kind: type[A]) -> A:
    found = of(actions, kind)
    assert len(found) == 1, actions
    return found[0]


def changes(actions: Plan) -> list[Action]:
    return [a for a in actions if isinstance(a, CHANGES)]


def with_daemon(observation: Observation, name: DaemonName, **fields: Any) -> Observation:
    daemons = dict(observation.daemons)
    daemons[name] = replace(daemons[name], **fields)
    return replace(observation, daemons=daemons)


def add_floating(doc: Doc) -> None:
    doc["floating_ips"].append({"floating_ip": "203.0.113.12", "fixed_ip": "10.0.1.6"})


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


# --- a first apply, and one that changes nothing ---------------------------------------


def test_first_apply_creates_everything_ruleset_before_any_link() -> None:
    new = config()
    actions = plan(None, new, Observation())
    assert actions[0] == CreateNamespace(NAMES.appliance_netns(APPLIANCE))
    assert actions[1] == LoadRuleset(
        RulesetMode.load, rendered(new).nftables.text(), rendered(new).nftables.text()
    )
    plugs = of(actions, PlugInterface)
    assert [(p.name, p.mtu, p.recreate) for p in plugs] == [
        (EXTERNAL, 1500, True),
        (NET_A, 1450, True),
        (NET_B, 1400, True),  # the interface's own MTU wins over the network's
    ]
    assert plugs[0].bridge == NAMES.bridge("ext-net")
    assert plugs[0].fabric_link == NAMES.appliance_fabric_link(APPLIANCE, EXTERNAL_MAC)
    assert actions.index(plugs[0]) > 1
    assert [a.link for a in of(actions, SyncAddresses)] == [EXTERNAL, NET_A, NET_B]
    assert one(actions, SyncRoutes).routes == tuple(
        (r.destination, r.nexthop, None) for r in new.routes
    )
    floating = one(actions, SyncFloatingRoutes)
    assert (floating.device, floating.addresses) == (
        EXTERNAL,
        (ip("203.0.113.10"), ip("203.0.113.11")),
    )
    texts = rendered(new)
    assert of(actions, StartDaemon) == [
        StartDaemon(
            DaemonName.dnsmasq,
            (
                DaemonFile("dnsmasq.conf", texts.dnsmasq.conf),
                DaemonFile("dnsmasq.hosts", texts.dnsmasq.hosts),
            ),
        ),
        StartDaemon(DaemonName.radvd, (DaemonFile("radvd.conf", texts.radvd),)),
        StartDaemon(DaemonName.haproxy, (DaemonFile("haproxy.cfg", texts.haproxy),)),
    ]
    assert of(actions, ForgetConntrack) == []
    # A new external interface: its IPv4 address and every floating IP
    # announced; each new internal one its IPv4 addresses (so that switches,
    # VXLAN forwarding tables on other hosts among them, learn where it is).
    announced = {a.interface: a for a in of(actions, Announce)}
    assert announced.pop(EXTERNAL) == Announce(
        EXTERNAL, EXTERNAL_MAC, (ip("203.0.113.2"), ip("203.0.113.10"), ip("203.0.113.11"))
    )
    assert announced and all(a.interface.startswith("int") for a in announced.values())
    assert all(a.addresses for a in announced.values())
    assert isinstance(actions[-1], Announce)


def test_same_config_again_changes_nothing() -> None:
    current = config()
    actions = plan(current, current, converged(current))
    assert changes(actions) == []
    # Only upkeep and the "make exactly this" syncs, which report nothing when equal.
    assert actions[0] == ConfigureNamespace(NAMES.appliance_netns(APPLIANCE))


def test_a_missing_namespace_is_rebuilt_trusting_nothing_of_the_old_one() -> None:
    previous = config()
    new = config(lambda d: d["floating_ips"].pop())
    actions = plan(previous, new, replace(Observation(), fabric_ends=converged(new).fabric_ends))
    assert isinstance(actions[0], CreateNamespace)
    assert one(actions, LoadRuleset).mode is RulesetMode.load
    assert all(p.recreate for p in of(actions, PlugInterface))
    # The old namespace took its connections with it: nothing to forget.
    assert of(actions, ForgetConntrack) == []


def test_a_network_not_on_this_host_cannot_be_planned() -> None:
    with pytest.raises(NetworkMissing, match="network net-b is not on this host"):
        plan_apply(
            names=NAMES,
            appliance_id=APPLIANCE,
            previous=None,
            config=config(),
            rendered=rendered(config()),
            observation=Observation(),
            network_mtus={k: v for k, v in NETWORK_MTUS.items() if k != "net-b"},
        )


# --- nftables: delta, replace or nothing -----------------------------------------------


def test_only_elements_differ_so_only_elements_change() -> None:
    previous, new = config(), config(add_floating)
    load = one(plan(previous, new, converged(previous)), LoadRuleset)
    assert load.mode is RulesetMode.delta
    assert load.commands == rendered(new).nftables.delta(rendered(previous).nftables)
    assert "add element inet astara floating_dnat { 203.0.113.12 : 10.0.1.6 }" in load.commands
    assert "table inet astara {" not in load.commands
    assert load.ruleset == rendered(new).nftables.text()  # what is saved afterwards


@pytest.mark.parametrize(
    ("case", "observed", "mode"),
    [
        # Someone edited the live table: the saved listing no longer matches.
        ("live table edited", {"live": LISTING + "# edited\n"}, RulesetMode.replace_table),
        # An older agent (another rendering) or a crash before recording.
        (
            "saved text from another rendering",
            {"saved_text": "# older\n"},
            RulesetMode.replace_table,
        ),
        ("no saved listing", {"saved_listing": None}, RulesetMode.replace_table),
        ("no table in the kernel", {"live": ""}, RulesetMode.load),
    ],
)
def test_the_table_is_replaced_unless_the_kernel_holds_what_the_last_load_left(
    case: str, observed: dict[str, Any], mode: RulesetMode
) -> None:
    previous, new = config(), config(add_floating)
    before = converged(previous)
    observation = replace(before, ruleset=replace(before.ruleset, **observed))
    load = one(plan(previous, new, observation), LoadRuleset)
    assert load.mode is mode, case
    assert load.commands == load.ruleset == rendered(new).nftables.text()


def test_a_structural_change_replaces_the_table() -> None:
    previous, new = config(), config(lambda d: d.update(snat={"enabled": False}))
    assert (
        one(plan(previous, new, converged(previous)), LoadRuleset).mode is RulesetMode.replace_table
    )


def test_without_a_previous_config_a_live_table_is_replaced_not_patched() -> None:
    """Restoring the last good config trusts nothing of the failed attempt."""
    current = config()
    load = one(plan(None, current, converged(current)), LoadRuleset)
    assert load.mode is RulesetMode.replace_table


def test_nothing_differs_no_ruleset_action() -> None:
    """Another change (a route) leaves the ruleset alone."""
    previous = config()
    new = config(
        lambda d: d["routes"].append({"destination": "198.18.0.0/15", "nexthop": "203.0.113.1"})
    )
    actions = plan(previous, new, converged(previous))
    assert of(actions, LoadRuleset) == []
    assert (ipaddress.ip_network("198.18.0.0/15"), ip("203.0.113.1"), None) in one(
        actions, SyncRoutes
    ).routes


def test_an_on_link_route_names_the_external_interface() -> None:
    """A gateway outside the external subnet (Neutron accepts one) is
    reached on-link: the route carries the external interface's name."""
    new = config(
        lambda d: d["routes"].__setitem__(
            0, {"destination": "0.0.0.0/0", "nexthop": "192.0.2.1", "onlink": True}
        )
    )
    routes = one(plan(None, new, Observation()), SyncRoutes).routes
    assert routes[0] == (ipaddress.ip_network("0.0.0.0/0"), ip("192.0.2.1"), "extfa163e000001")


# --- links -----------------------------------------------------------------------------


def test_a_link_not_in_the_config_is_removed_before_any_plug() -> None:
    current = config()
    observation = converged(current)
    stray = appliance_interface("management", "fa:16:3e:00:09:09")
    links = {**observation.links, stray: LinkObserved("fa:16:3e:00:09:09", 1500, True)}
    links[NET_B] = replace(links[NET_B], up=False)  # so that net-b's interface gets a plug
    actions = plan(current, current, replace(observation, links=links))
    removal = one(actions, RemoveLink)
    assert removal == RemoveLink(stray)
    assert actions.index(removal) < actions.index(one(actions, PlugInterface))


def test_removing_an_interface_from_the_config_removes_its_link() -> None:
    previous = config()

    def drop_net_b(doc: Doc) -> None:
        doc["interfaces"].pop()
        doc["subnets"] = [s for s in doc["subnets"] if s["interface_mac"] != NET_B_MAC]
        doc["dhcp_hosts"] = [
            h for h in doc["dhcp_hosts"] if not h["ip_address"].startswith("10.0.2.")
        ]
        doc["floating_ips"] = [
            f for f in doc["floating_ips"] if not f["fixed_ip"].startswith("10.0.2.")
        ]

    new = config(drop_net_b)
    actions = plan(previous, new, converged(previous))
    assert one(actions, RemoveLink) == RemoveLink(NET_B)
    assert of(actions, PlugInterface) == []
    assert NET_B not in [a.link for a in of(actions, SyncAddresses)]
    # dnsmasq no longer serves net-b: a new config, so a restart.
    assert of(actions, StartDaemon) == [one(actions, StartDaemon)]
    assert one(actions, StartDaemon).daemon is DaemonName.dnsmasq


@pytest.mark.parametrize(
    ("case", "inside", "fabric", "recreate"),
    [
        ("missing inside", None, {}, True),
        ("wrong MAC", {"mac": "fa:16:3e:99:99:99"}, {}, True),
        ("fabric end missing", {}, None, True),
        ("down", {"up": False}, {}, False),
        ("wrong MTU", {"mtu": 1500}, {}, False),
        ("fabric end down", {}, {"up": False}, False),
        ("fabric end off its bridge", {}, {"on_bridge": False}, False),
    ],
)
def test_an_interface_is_recreated_only_if_missing_or_not_the_one_asked_for(
    case: str,
    inside: dict[str, Any] | None,
    fabric: dict[str, Any] | None,
    recreate: bool,
) -> None:
    current = config()
    observation = converged(current)
    links, ends = dict(observation.links), dict(observation.fabric_ends)
    fabric_link = NAMES.appliance_fabric_link(APPLIANCE, NET_B_MAC)
    if inside is None:
        del links[NET_B]
    else:
        links[NET_B] = replace(links[NET_B], **inside)
    if fabric is None:
        del ends[fabric_link]
    else:
        ends[fabric_link] = replace(ends[fabric_link], **fabric)
    actions = plan(current, current, replace(observation, links=links, fabric_ends=ends))
    plug = one(actions, PlugInterface)
    assert (plug.name, plug.mtu, plug.recreate) == (NET_B, 1400, recreate), case


# --- daemons ---------------------------------------------------------------------------


def test_a_change_of_dhcp_hosts_reloads_dnsmasq_only() -> None:
    previous = config()
    new = config(
        lambda d: d["dhcp_hosts"].append({"mac": "fa:16:3e:10:00:99", "ip_address": "10.0.1.99"})
    )
    actions = plan(previous, new, converged(previous))
    assert of(actions, StartDaemon) == []
    assert of(actions, ReloadDaemon) == [
        ReloadDaemon(
            DaemonName.dnsmasq, (DaemonFile("dnsmasq.hosts", rendered(new).dnsmasq.hosts),)
        )
    ]


def test_a_change_of_dnsmasq_config_restarts_it() -> None:
    previous = config()
    new = config(lambda d: d["subnets"][0].update(lease_time_s=600))
    actions = plan(previous, new, converged(previous))
    start = one(actions, StartDaemon)
    assert start.daemon is DaemonName.dnsmasq
    assert [f.name for f in start.files] == ["dnsmasq.conf"]
    assert of(actions, ReloadDaemon) == []


@pytest.mark.parametrize("daemon", [DaemonName.dnsmasq, DaemonName.radvd, DaemonName.haproxy])
def test_a_dead_daemon_is_started_with_nothing_to_write(daemon: DaemonName) -> None:
    current = config()
    actions = plan(current, current, with_daemon(converged(current), daemon, running=False))
    assert changes(actions) == [StartDaemon(daemon, ())]


def test_a_change_of_radvd_config_reloads_it() -> None:
    previous = config()
    new = config(lambda d: d["subnets"][2].update(dns_nameservers=["2001:db8::54"]))
    actions = plan(previous, new, converged(previous))
    assert changes(actions) == [
        ReloadDaemon(DaemonName.radvd, (DaemonFile("radvd.conf", rendered(new).radvd),))
    ]


def test_daemons_with_nothing_to_serve_are_stopped_and_their_files_removed() -> None:
    previous = config()

    def no_dhcp_no_ra(doc: Doc) -> None:
        doc["subnets"] = [
            {**s, "enable_dhcp": False} for s in doc["subnets"] if "ipv6_ra_mode" not in s
        ]

    new = config(no_dhcp_no_ra)
    actions = plan(previous, new, converged(previous))
    assert of(actions, StopDaemon) == [
        StopDaemon(DaemonName.dnsmasq, running=True),
        StopDaemon(DaemonName.radvd, running=True),
    ]
    # Stopped already, files left (a crash): the files go; then nothing more.
    left = with_daemon(converged(previous), DaemonName.dnsmasq, running=False)
    assert StopDaemon(DaemonName.dnsmasq, running=False) in plan(previous, new, left)
    assert of(plan(new, new, converged(new)), StopDaemon) == []


def test_a_recreated_interface_leaves_the_daemons_alone() -> None:
    """dnsmasq and radvd follow their interfaces by name (root test:
    test_a_lost_interface_is_replugged_and_served_again)."""
    current = config()
    observation = converged(current)
    links = {k: v for k, v in observation.links.items() if k != NET_A}
    actions = plan(current, current, replace(observation, links=links))
    assert one(actions, PlugInterface).recreate
    assert of(actions, StartDaemon) == of(actions, ReloadDaemon) == []


# --- floating IPs: conntrack and gratuitous ARP ----------------------------------------


def test_a_new_floating_ip_is_announced_and_nothing_forgotten() -> None:
    previous, new = config(), config(add_floating)
    actions = plan(previous, new, converged(previous))
    assert one(actions, Announce) == Announce(EXTERNAL, EXTERNAL_MAC, (ip("203.0.113.12"),))
    assert of(actions, ForgetConntrack) == []


def test_a_removed_floating_ip_is_forgotten_and_not_announced() -> None:
    previous = config()
    new = config(lambda d: d["floating_ips"].pop(0))
    actions = plan(previous, new, converged(previous))
    assert one(actions, ForgetConntrack) == ForgetConntrack((ip("203.0.113.10"),))
    assert of(actions, Announce) == []


def test_a_moved_floating_ip_is_forgotten_and_announced() -> None:
    previous = config()
    new = config(lambda d: d["floating_ips"][0].update(fixed_ip="10.0.1.6"))
    actions = plan(previous, new, converged(previous))
    assert one(actions, ForgetConntrack) == ForgetConntrack((ip("203.0.113.10"),))
    assert one(actions, Announce).addresses == (ip("203.0.113.10"),)
    assert actions.index(one(actions, ForgetConntrack)) < actions.index(one(actions, Announce))


# --- firewall groups: the flows of the networks they filter ------------------------------


def _firewall(action: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["firewalls"] = [
            {
                "id": "fw",
                "interfaces": [NET_A_MAC],
                "ingress": [{"action": action, "ip_version": 4, "protocol": "tcp"}],
            }
        ]

    return mutate


def test_a_stricter_firewall_ends_the_flows_of_its_networks_only() -> None:
    previous, new = config(_firewall("allow")), config(_firewall("deny"))
    actions = plan(previous, new, converged(previous))
    forget = one(actions, ForgetConntrack)
    # The networks behind the interface, and the floating IP of a host on them.
    assert forget == ForgetConntrack(
        (ip("203.0.113.10"),),
        (ipaddress.ip_network("10.0.1.0/24"), ipaddress.ip_network("2001:db8:1::/64")),
    )
    assert ["conntrack", "-D", "-f", "ipv4", "--orig-dst", "10.0.1.0/24"] in forget.commands()
    # After the new rules are in: a flow forgotten before would be tracked
    # again under the old ones.
    assert actions.index(forget) > actions.index(one(actions, LoadRuleset))
    # Added: stricter too. Unchanged, removed, or only allows added: nothing.
    assert one(plan(config(), new, converged(config())), ForgetConntrack) == forget
    assert of(plan(new, config(), converged(new)), ForgetConntrack) == []
    assert of(plan(new, new, converged(new)), ForgetConntrack) == []

    def more(action: str) -> Callable[[Doc], None]:
        def mutate(doc: Doc) -> None:
            _firewall("deny")(doc)
            rules = doc["firewalls"][0]["ingress"]
            rules.insert(0, {"action": action, "ip_version": 4, "protocol": "udp"})

        return mutate

    assert of(plan(new, config(more("allow")), converged(new)), ForgetConntrack) == []
    assert one(plan(new, config(more("reject")), converged(new)), ForgetConntrack) == forget


def test_a_recreated_external_interface_announces_all_its_addresses() -> None:
    current = config()
    observation = converged(current)
    links = dict(observation.links)
    links[EXTERNAL] = replace(links[EXTERNAL], mac="fa:16:3e:99:99:99")
    actions = plan(current, current, replace(observation, links=links))
    assert one(actions, PlugInterface).recreate
    # IPv4 only: the IPv6 address is not ARP's business.
    assert one(actions, Announce) == Announce(
        EXTERNAL, EXTERNAL_MAC, (ip("203.0.113.2"), ip("203.0.113.10"), ip("203.0.113.11"))
    )
    # A merely re-attached one keeps its neighbours' caches right: no announcement.
    links[EXTERNAL] = replace(links[EXTERNAL], mac=EXTERNAL_MAC, up=False)
    actions = plan(current, current, replace(observation, links=links))
    assert not one(actions, PlugInterface).recreate
    assert of(actions, Announce) == []


def test_without_an_external_interface_nothing_is_answered_externally() -> None:
    def internal_only(doc: Doc) -> None:
        doc["interfaces"].pop(0)
        doc.update(routes=[], floating_ips=[], snat={"enabled": False})

    actions = plan(None, config(internal_only), Observation())
    assert one(actions, SyncFloatingRoutes) == SyncFloatingRoutes(None, ())
    # Nothing on an external network; the new internal interfaces are announced.
    assert {a.interface[:3] for a in of(actions, Announce)} == {"int"}


# --- the words the API answers with ----------------------------------------------------


def test_done_actions_read_as_the_api_has_always_worded_them() -> None:
    previous, new = config(), config(add_floating)
    actions = plan(previous, new, converged(previous))
    assert str(Done(one(actions, LoadRuleset))) == "nftables: set elements updated"
    assert str(Done(one(actions, Announce))) == "gratuitous ARP for 1 addresses"
    assert (
        str(Done(SyncAddresses(NET_A, ()), Changes(2, 1)))
        == f"{NET_A}: 2 addresses added, 1 removed"
    )
    assert str(Done(SyncFloatingRoutes(EXTERNAL, ()), Changes(1, 0))) == (
        "floating IPs answered: 1 added, 0 removed"
    )
    assert str(Done(CreateNamespace("t-appliance-r1"))) == "created namespace t-appliance-r1"
    assert str(Done(ReloadDaemon(DaemonName.dnsmasq))) == "dnsmasq reloaded hosts"
    assert str(Done(StartDaemon(DaemonName.radvd))) == "radvd started"
    assert not Changes(0, 0) and Changes(0, 1)


def test_an_appliance_that_must_not_forward_has_forwarding_off_in_the_kernel() -> None:
    """A DHCP appliance or an administratively down router: the namespace's
    forwarding sysctls are off, not only the ruleset's forward chain."""
    quiet = config(lambda d: d.update(forwarding=False, routes=[], floating_ips=[], snat={}))
    assert one(plan(None, quiet, Observation()), CreateNamespace).forwarding is False
    assert one(plan(quiet, quiet, converged(quiet)), ConfigureNamespace).forwarding is False
    off = appliance_sysctls(False)
    assert off["net.ipv4.ip_forward"] == off["net.ipv6.conf.all.forwarding"] == "0"
    assert appliance_sysctls(True)["net.ipv4.ip_forward"] == "1"


def is_settled(cfg: ApplianceConfig, observation: Observation) -> bool:
    texts = rendered(cfg)
    return settled(
        names=NAMES,
        appliance_id=APPLIANCE,
        config=cfg,
        observation=observation,
        network_mtus=NETWORK_MTUS,
        daemons_expected={
            DaemonName.dnsmasq: texts.dnsmasq.enabled,
            DaemonName.radvd: bool(texts.radvd),
        },
    )


def test_an_unchanged_config_is_settled_only_as_the_last_apply_left_it() -> None:
    """What lets an unchanged PUT answer without rendering: every drift the
    cheap observation can see sends it to a full apply."""
    current = config()
    observation = converged(current)
    assert is_settled(current, observation)
    links = dict(observation.links)
    links[EXTERNAL] = replace(links[EXTERNAL], up=False)
    ends = {name: replace(end, on_bridge=False) for name, end in observation.fabric_ends.items()}
    drifted = [
        replace(observation, namespace_exists=False),
        replace(observation, links=links),
        replace(observation, links={**observation.links, "intstray": links[EXTERNAL]}),
        replace(observation, fabric_ends=ends),
        replace(observation, ruleset=replace(observation.ruleset, live="table edited\n")),
        replace(observation, ruleset=RulesetObserved()),
        with_daemon(observation, DaemonName.dnsmasq, running=False),
        with_daemon(observation, DaemonName.radvd, files={}),
    ]
    for observed in drifted:
        assert not is_settled(current, observed), observed
    # A daemon running with nothing to serve is drift too.
    without_dhcp = config(lambda d: [s.update(enable_dhcp=False) for s in d["subnets"]])
    assert not is_settled(without_dhcp, observation)
