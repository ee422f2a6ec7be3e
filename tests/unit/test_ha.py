"""An HA router member, without root: its config's rules, keepalived's and
conntrackd's texts (goldens, and keepalived's own check), the apply's plan
of a standby member (off the wire, never announced), drift as a standby
sees it, keepalived's events, and the unsolicited neighbour advertisement."""

from __future__ import annotations

import ipaddress
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.actions import Announce, PinNeighbour, PlugInterface, SyncAddresses
from astara.appliance.drift import Seen, compare
from astara.appliance.ha import HaRole, parse_event
from astara.appliance.plan import (
    FabricEndObserved,
    LinkObserved,
    Observation,
    RulesetObserved,
    plan_apply,
    settled,
)
from astara.appliance.render import render
from astara.appliance.render.ha import render_conntrackd, render_keepalived
from astara.appliance.render.nftables import render_nftables
from astara.appliance.schema import HA_ROLE_ADDRESS, ApplianceConfig, validate_semantics
from astara.linux import garp, netlink
from astara.naming import Names, appliance_interface
from tests.unit.configs import NETWORK_MTUS, STATE_DIR, representative
from tests.unit.test_apply_plan import APPLIANCE, NAMES, of
from tests.unit.validators import run, scratch_netns

GOLDEN_DIR = Path(__file__).parent / "golden" / "ha"
UPDATE_GOLDEN = os.environ.get("ASTARA_UPDATE_GOLDEN") == "1"
HA_MAC, PEER_MAC = "fa:16:3e:0a:00:01", "fa:16:3e:0b:00:01"
MTUS = {**NETWORK_MTUS, "ha-net": 1450}


def member_doc(**ha: Any) -> dict[str, Any]:
    doc = representative()
    doc["interfaces"].append(
        {"mac": HA_MAC, "network_id": "ha-net", "role": "ha", "addresses": ["169.254.192.7/18"]}
    )
    doc["ha"] = {
        "interface_mac": HA_MAC,
        "peer_address": "169.254.192.9",
        "peer_mac": PEER_MAC,
        "virtual_router_id": 42,
        **ha,
    }
    return doc


def member(**ha: Any) -> ApplianceConfig:
    return ApplianceConfig.model_validate(member_doc(**ha))


def problems(doc: dict[str, Any]) -> list[str]:
    return [e.msg for e in validate_semantics(ApplianceConfig.model_validate(doc))]


# --- the config's rules ------------------------------------------------------------------


def test_a_member_config_is_valid() -> None:
    assert problems(member_doc()) == []
    assert member().ha_address() == ipaddress.IPv4Interface("169.254.192.7/18")
    assert [i.role.value for i in member().on_the_wire()] == ["external", "internal", "internal"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["ha"].update(peer_address="169.254.192.7"), "the peer must be another"),
        (lambda d: d["ha"].update(peer_address="10.9.9.9"), "the peer must be another"),
        (lambda d: d["ha"].update(peer_mac=HA_MAC), "the peer has a MAC of its own"),
        (lambda d: d["ha"].update(interface_mac=PEER_MAC), "the ha interface has MAC"),
        (lambda d: d.pop("ha"), "an ha interface needs the ha section"),
        (lambda d: d["interfaces"].pop(), "exactly one interface of role ha"),
        (lambda d: d["interfaces"][-1].update(addresses=[]), "needs an IPv4 address"),
        (
            lambda d: d["interfaces"][-1].update(addresses=["169.254.0.7/16"]),
            "169.254.0.1 is the HA role's address",
        ),
    ],
)
def test_a_member_config_that_cannot_work_is_refused(change: Any, expected: str) -> None:
    doc = member_doc()
    change(doc)
    found = problems(doc)
    assert any(expected in p for p in found), found


def test_the_advert_interval_is_in_10_ms_steps() -> None:
    with pytest.raises(ValueError, match="multiple of 10"):
        member(advert_interval_ms=105)
    assert member(advert_interval_ms=30).ha is not None


def test_only_a_router_has_members() -> None:
    doc = member_doc()
    doc["kind"] = "dhcp"
    assert any("only a router" in p for p in problems(doc))


# --- rendered texts ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["keepalived.conf", "conntrackd.conf"])
def test_rendered_texts_match_their_goldens(name: str) -> None:
    texts = render(member(), STATE_DIR, MTUS).texts()
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[name])
    assert texts[name] == path.read_text()


def test_keepalived_decides_the_role_only() -> None:
    text = render_keepalived(member(advert_interval_ms=30), STATE_DIR)
    ha_link = appliance_interface("ha", HA_MAC)
    assert f"{HA_ROLE_ADDRESS} dev {ha_link}" in text
    assert "advert_int 0.03" in text
    assert "nopreempt" in text and "state BACKUP" in text
    # No tenant address: a floating IP or an interface never reloads keepalived.
    assert "203.0.113" not in text and "10.0.1" not in text
    doc = member_doc()
    doc["floating_ips"].append({"floating_ip": "203.0.113.12", "fixed_ip": "10.0.1.6"})
    assert render_keepalived(ApplianceConfig.model_validate(doc), STATE_DIR) == render_keepalived(
        member(), STATE_DIR
    )


def test_no_sync_no_conntrackd_and_no_ha_no_keepalived() -> None:
    assert render_conntrackd(member(conntrack_sync=False), STATE_DIR) == ""
    plain = ApplianceConfig.model_validate(representative())
    assert render_keepalived(plain, STATE_DIR) == render_conntrackd(plain, STATE_DIR) == ""


def test_keepalived_accepts_the_config(tmp_path: Path) -> None:
    """keepalived's own check (`-t`) in a namespace holding the HA link."""
    text = render_keepalived(member(), tmp_path)
    (tmp_path / "keepalived.conf").write_text(text)
    with scratch_netns() as netns:
        link = appliance_interface("ha", HA_MAC)
        assert run(["ip", "-n", netns, "link", "add", link, "type", "veth"]).returncode == 0
        checked = run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "keepalived",
                "-t",
                "-f",
                str(tmp_path / "keepalived.conf"),
            ]
        )
    assert checked.returncode == 0, checked.stderr


def test_the_ha_link_hears_its_peer_only_and_routes_nothing() -> None:
    text = render_nftables(member()).text()
    link = appliance_interface("ha", HA_MAC)
    assert f'iifname "{link}" ip saddr 169.254.192.9 accept' in text
    assert f'iifname "{link}" drop' in text
    assert f'oifname {{ "{link}" }} drop' in text


# --- the apply's plan --------------------------------------------------------------------


def test_a_standby_member_is_plugged_off_the_wire_and_announces_nothing() -> None:
    config = member()
    wired = {appliance_interface(i.role.value, i.mac) for i in config.on_the_wire()}
    actions = plan_apply(
        names=NAMES,
        appliance_id=APPLIANCE,
        previous=None,
        config=config,
        rendered=render(config, STATE_DIR, MTUS),
        observation=Observation(),
        network_mtus=MTUS,
        role_links=wired,
        quiet=True,
    )
    # Made off the wire (`None`: the role decides), but the HA link.
    plugs = {p.name: p.on_wire for p in of(actions, PlugInterface)}
    assert plugs == {**dict.fromkeys(wired, None), appliance_interface("ha", HA_MAC): True}
    # Only the HA link (on the wire on every member) is announced.
    ha_link = appliance_interface("ha", HA_MAC)
    assert [a.interface for a in of(actions, Announce)] == [ha_link]
    # keepalived's address on the HA link is left to keepalived.
    ha_sync = next(a for a in of(actions, SyncAddresses) if a.link == ha_link)
    assert ha_sync.kept == (HA_ROLE_ADDRESS,)
    # Its peer pinned on the HA link (no resolving it while adverts go out).
    assert of(actions, PinNeighbour) == [
        PinNeighbour(ha_link, ipaddress.IPv4Address("169.254.192.9"), PEER_MAC)
    ]


def member_converged(config: ApplianceConfig, standby: frozenset[str]) -> Observation:
    """The namespace as applying `config` leaves it, `standby` off the wire."""
    links, ends = {}, {}
    for interface in config.interfaces:
        mtu = interface.mtu or MTUS[interface.network_id]
        name = appliance_interface(interface.role.value, interface.mac)
        links[name] = LinkObserved(mac=interface.mac, mtu=mtu, up=True)
        ends[NAMES.appliance_fabric_link(APPLIANCE, interface.mac)] = FabricEndObserved(
            mtu=mtu, up=name not in standby, on_bridge=True
        )
    listing = "table inet astara {\n}\n"
    return Observation(
        namespace_exists=True,
        links=links,
        fabric_ends=ends,
        ruleset=RulesetObserved(live=listing, saved_listing=listing),
    )


def test_whether_a_members_links_are_on_the_wire_is_no_plans_business() -> None:
    """An apply neither puts an HA member's links on the wire nor takes
    them off: its role does (`Roles.enforce`, after every apply), so an
    apply planned with a role that changed meanwhile cannot undo it."""
    config = member()
    wired = frozenset(appliance_interface(i.role.value, i.mac) for i in config.on_the_wire())

    def is_settled(observation: Observation, role_links: frozenset[str]) -> bool:
        return settled(
            names=NAMES,
            appliance_id=APPLIANCE,
            config=config,
            observation=observation,
            network_mtus=MTUS,
            daemons_expected={},
            role_links=role_links,
        )

    on_wire, off_wire = member_converged(config, frozenset()), member_converged(config, wired)
    assert is_settled(on_wire, wired) and is_settled(off_wire, wired)
    # A plain router's links are the plan's: down is not settled.
    assert is_settled(on_wire, frozenset()) and not is_settled(off_wire, frozenset())
    actions = plan_apply(
        names=NAMES,
        appliance_id=APPLIANCE,
        previous=config,
        config=config,
        rendered=render(config, STATE_DIR, MTUS),
        observation=off_wire,
        network_mtus=MTUS,
        role_links=wired,
    )
    assert of(actions, PlugInterface) == []


# --- drift -------------------------------------------------------------------------------


def seen_as_applied(config: ApplianceConfig, names: Names, standby: frozenset[str]) -> Seen:
    links, addresses, ends = {}, {}, {}
    for interface in config.interfaces:
        name = appliance_interface(interface.role.value, interface.mac)
        mtu = interface.mtu or MTUS[interface.network_id]
        links[name] = netlink.LinkState(
            name=name, mac=interface.mac, mtu=mtu, up=True, master=None, counters={}
        )
        addresses[name] = frozenset(interface.addresses)
        end = netlink.LinkState(
            name="", mac="fa:16:3e:ff:ff:ff", mtu=mtu, up=name not in standby, master=1, counters={}
        )
        ends[names.appliance_fabric_link(APPLIANCE, interface.mac)] = (end, True)
    return Seen(links=links, addresses=addresses, fabric_ends=ends)


def test_drift_as_a_standby_member_sees_it() -> None:
    config = member()
    wired = frozenset(appliance_interface(i.role.value, i.mac) for i in config.on_the_wire())
    standby = seen_as_applied(config, NAMES, wired)
    assert (
        compare(NAMES, APPLIANCE, config, standby, MTUS, daemons_expected={}, standby=wired) == []
    )
    # Off the wire while it should serve: drift; on the wire as a standby: drift.
    assert compare(NAMES, APPLIANCE, config, standby, MTUS, daemons_expected={})
    active = seen_as_applied(config, NAMES, frozenset())
    found = compare(NAMES, APPLIANCE, config, active, MTUS, daemons_expected={}, standby=wired)
    assert any("on the wire on a standby member" in p for p in found)
    # keepalived's address on the active member's HA link is no drift.
    link = appliance_interface("ha", HA_MAC)
    held = dict(active.addresses)
    held[link] = held[link] | {HA_ROLE_ADDRESS}
    with_role = Seen(links=active.links, addresses=held, fabric_ends=active.fabric_ends)
    assert compare(NAMES, APPLIANCE, config, with_role, MTUS, daemons_expected={}) == []


# --- keepalived's events and the neighbour advertisement ---------------------------------


@pytest.mark.parametrize(
    ("line", "role"),
    [
        ('INSTANCE "router" MASTER 254', HaRole.active),
        ('INSTANCE "router" BACKUP 254', HaRole.standby),
        ('INSTANCE "router" FAULT 254', HaRole.fault),
        ('INSTANCE "router" STOP 254', HaRole.fault),
        ('INSTANCE "router" MASTER_PRIORITY 100', None),
        ('GROUP "g" MASTER 0', None),
        ("", None),
    ],
)
def test_keepalived_events(line: str, role: HaRole | None) -> None:
    assert parse_event(line) is role


def test_an_unsolicited_neighbour_advertisement_is_well_formed() -> None:
    address = ipaddress.IPv6Address("2001:db8:ff::2")
    frame = garp.na_frame("fa:16:3e:00:00:01", address)
    assert frame[:6] == b"\x33\x33\x00\x00\x00\x01"  # to all nodes
    ipv6, icmp = frame[14:54], frame[54:]
    version, length, next_header, hops = struct.unpack("!IHBB", ipv6[:8])
    assert (version >> 28, length, next_header, hops) == (6, len(icmp), 58, 255)
    assert ipv6[8:24] == address.packed and ipv6[24:40] == ipaddress.IPv6Address("ff02::1").packed
    kind, code, _, flags = struct.unpack("!BBHI", icmp[:8])
    assert (kind, code, flags) == (136, 0, 0xA0000000)  # router, override, not solicited
    assert icmp[8:24] == address.packed
    assert icmp[24:] == b"\x02\x01" + bytes.fromhex("fa163e000001")
    # The checksum over the pseudo-header and the message sums to zero.
    pseudo = ipv6[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert garp.checksum(pseudo + icmp) == 0
