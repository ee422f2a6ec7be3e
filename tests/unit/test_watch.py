"""The watch's decisions without root: when a marked appliance is checked
(debounce, bursts, back-off: functions of the time given), what counts as
drift (`appliance.drift.compare`), and reading netlink notifications."""

from __future__ import annotations

import ipaddress
import struct

from astara.agent.watch import BACKOFF_FIRST_S, BACKOFF_FREE, BACKOFF_RESET_S, Schedule
from astara.appliance.drift import Seen, compare, wanted_routes
from astara.linux import monitor
from astara.linux.monitor import Aspect, Change
from astara.linux.netlink import LinkState
from astara.naming import Names, appliance_interface
from tests.unit.configs import NETWORK_MTUS, representative_config

LINK, ROUTE = {Aspect.link}, {Aspect.route}


def test_a_burst_is_checked_once_when_it_settles() -> None:
    schedule = Schedule(debounce_s=0.05, burst_max_s=0.25)
    schedule.mark("r1", LINK, now=10.0)
    schedule.mark("r1", ROUTE, now=10.03)
    assert schedule.take_due(10.07) == []  # 50 ms after the last event, not the first
    assert schedule.next_deadline() == 10.08
    assert schedule.take_due(10.08) == [("r1", {Aspect.link, Aspect.route})]
    assert schedule.take_due(11.0) == []  # unmarked once taken


def test_an_endless_burst_is_checked_all_the_same() -> None:
    schedule = Schedule(debounce_s=0.05, burst_max_s=0.25)
    for n in range(10):
        schedule.mark("r1", LINK, now=10.0 + n * 0.04)
    assert schedule.take_due(10.25) == [("r1", LINK)]


def test_an_appliance_under_check_waits_and_a_cancel_drops_its_events() -> None:
    schedule = Schedule(debounce_s=0.05)
    schedule.mark("r1", LINK, now=10.0)
    schedule.mark("r2", LINK, now=10.0)
    assert schedule.next_deadline(busy={"r1", "r2"}) is None
    assert schedule.take_due(10.1, busy={"r1"}) == [("r2", LINK)]
    schedule.cancel("r1")  # an apply of r1 ended: its events were its own
    assert schedule.take_due(10.2) == []


def test_repairs_back_off_and_a_quiet_spell_resets() -> None:
    schedule = Schedule(debounce_s=0.05)
    now = 100.0
    for _ in range(BACKOFF_FREE - 1):  # the first ones wait for nothing
        schedule.repaired("r1", now)
        schedule.mark("r1", LINK, now)
        assert schedule.due_at("r1") == now + 0.05
        schedule.take_due(now + 1)
        now += 1
    waits = []
    for _ in range(4):
        schedule.repaired("r1", now)
        schedule.mark("r1", LINK, now)
        due = schedule.due_at("r1")
        assert due is not None
        waits.append(due - now)
        schedule.take_due(due)
        now = due
    assert waits == [BACKOFF_FIRST_S, 2 * BACKOFF_FIRST_S, 4 * BACKOFF_FIRST_S, 8 * BACKOFF_FIRST_S]
    later = now + BACKOFF_RESET_S
    schedule.repaired("r1", later)
    schedule.mark("r1", LINK, later)
    assert schedule.due_at("r1") == later + 0.05
    schedule.forget("r1")
    assert schedule.due_at("r1") is None and "r1" not in schedule.backoff


# --- drift -----------------------------------------------------------------------------

NAMES = Names("ast")


def healthy() -> Seen:
    """What a converged representative router looks like."""
    config = representative_config()
    links, addresses, ends = {}, {}, {}
    for interface in config.interfaces:
        name = appliance_interface(interface.role.value, interface.mac)
        mtu = interface.mtu or NETWORK_MTUS[interface.network_id]
        links[name] = LinkState(name, interface.mac, mtu, True, None, {})
        addresses[name] = frozenset(interface.addresses)
        fabric_link = NAMES.appliance_fabric_link("r1", interface.mac)
        ends[fabric_link] = (LinkState(fabric_link, "", mtu, True, 7, {}), True)
    main, local = wanted_routes(config)
    return Seen(
        links=links,
        addresses=addresses,
        fabric_ends=ends,
        daemons_running={"dnsmasq": True, "radvd": True},
        main_routes=main,
        local_routes=local,
    )


def problems(seen: Seen, withdrawn: tuple[str, ...] = ()) -> list[str]:
    return compare(NAMES, "r1", representative_config(), seen, NETWORK_MTUS, withdrawn)


def test_a_converged_appliance_has_not_drifted() -> None:
    assert problems(healthy()) == []
    # Routes are read only when a route changed.
    assert problems(Seen(**{**healthy().__dict__, "main_routes": None})) == []


def test_each_kind_of_drift_is_found() -> None:
    config = representative_config()
    external = config.interfaces[0]
    name = appliance_interface(external.role.value, external.mac)
    fabric_link = NAMES.appliance_fabric_link("r1", external.mac)
    seen = healthy()

    gone = {k: v for k, v in seen.links.items() if k != name}
    assert f"interface {name} is missing" in problems(Seen(**{**seen.__dict__, "links": gone}))

    down = {**seen.links, name: LinkState(name, external.mac, 1500, False, None, {})}
    assert problems(Seen(**{**seen.__dict__, "links": down})) == [f"interface {name} is down"]
    # Down on purpose (fenced): not drift.
    assert problems(Seen(**{**seen.__dict__, "links": down}), withdrawn=(name,)) == []

    fewer = {**seen.addresses, name: frozenset()}
    assert problems(Seen(**{**seen.__dict__, "addresses": fewer})) == [
        f"interface {name} has other addresses than configured"
    ]

    detached = {**seen.fabric_ends, fabric_link: (seen.fabric_ends[fabric_link][0], False)}
    assert problems(Seen(**{**seen.__dict__, "fabric_ends": detached})) == [
        f"fabric link {fabric_link} is down, detached or resized"
    ]
    no_end = {k: v for k, v in seen.fabric_ends.items() if k != fabric_link}
    assert problems(Seen(**{**seen.__dict__, "fabric_ends": no_end})) == [
        f"fabric link {fabric_link} is missing"
    ]

    no_routes = Seen(**{**seen.__dict__, "main_routes": frozenset()})
    assert problems(no_routes) == ["routes differ from the configured ones"]
    # A withdrawn external interface takes its routes with it.
    assert problems(no_routes, withdrawn=(name,)) == []

    stopped = Seen(**{**seen.__dict__, "daemons_running": {"dnsmasq": False, "radvd": True}})
    assert problems(stopped) == ["dnsmasq is not running"]


def test_an_address_added_by_hand_is_drift_too() -> None:
    config = representative_config()
    internal = config.interfaces[1]
    name = appliance_interface(internal.role.value, internal.mac)
    seen = healthy()
    more = {**seen.addresses, name: seen.addresses[name] | {ipaddress.ip_interface("10.9.9.9/24")}}
    assert problems(Seen(**{**seen.__dict__, "addresses": more})) == [
        f"interface {name} has other addresses than configured"
    ]


# --- reading notifications -------------------------------------------------------------


def _message(kind: int, body: bytes) -> bytes:
    length = 16 + len(body)
    padded = body + b"\0" * (-len(body) % 4)
    return struct.pack("=IHHII", length, kind, 0, 0, 0) + padded


def test_notifications_are_read_with_the_link_name() -> None:
    name = b"astab0123456789\0"
    attribute = struct.pack("=HH", 4 + len(name), monitor.IFLA_IFNAME) + name
    link = _message(monitor.RTM_DELLINK, b"\0" * 16 + attribute)
    route = _message(monitor.RTM_NEWROUTE, b"\0" * 12)
    other = _message(28, b"\0" * 12)  # RTM_NEWNEIGH: not watched
    assert monitor.parse(link + route + other) == [
        Change(Aspect.link, True, "astab0123456789"),
        Change(Aspect.route, False),
    ]
