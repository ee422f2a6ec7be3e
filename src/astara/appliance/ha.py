"""HA router members on this host: their roles, and their interfaces put on
the wire or taken off it as the role says (the edge).

Both members of an HA router carry the same interfaces, with the same MACs
and addresses, routes, floating IPs, ruleset and daemons: a config change
reaches both alike and never moves the role. What differs is only whether
a member's interfaces are on the wire: the fabric end of each veth is up on
the active member and down on the standby, whose interfaces then have no
carrier but keep every address and route (a link set down would lose its
routes, and the standby could not take over without writing them again,
10,000 floating IP routes among them). Taking over is one link change per
interface, whatever the number of floating IPs, then a gratuitous ARP and
an unsolicited neighbour advertisement per interface address, which move
the MACs in every bridge and VXLAN forwarding table (the neighbours' ARP
caches need nothing: the MACs are the same).

keepalived decides the role (see `render.ha`); its events arrive on a FIFO
(`agent.ha` reads them) and land here as `transition`. Its level, read
after an agent restart, is the role address on the HA link: keepalived
holds it while it is master.

Each member's role has a small lock of its own, not the appliance's: a
failover must not wait for an apply. An apply never sets an HA member's
links on or off the wire (it makes new ones off it, `role_links`), and
calls `enforce` when it ends, which puts them as the role says now.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from astara.appliance.actions import DaemonName
from astara.appliance.render.ha import FENCE_FILE
from astara.appliance.schema import HA_ROLE_ADDRESS, ApplianceConfig
from astara.linux import garp, netlink, netns
from astara.linux.files import write_atomic
from astara.linux.run import run
from astara.naming import Names, appliance_interface

log = logging.getLogger(__name__)


class HaRole(StrEnum):
    active = "active"  # keepalived's MASTER: on the wire
    standby = "standby"  # BACKUP: off the wire, ready to take over
    fault = "fault"  # FAULT (fenced, demoted, HA link down) or stopped: off the wire


# keepalived's states (as its FIFO writes them) → the member's role.
KEEPALIVED_STATES = {
    "MASTER": HaRole.active,
    "BACKUP": HaRole.standby,
    "FAULT": HaRole.fault,
    "STOP": HaRole.fault,
    "DELETED": HaRole.fault,
}


def parse_event(line: str) -> HaRole | None:
    """A line keepalived writes on its FIFO (`INSTANCE "router" MASTER 254`)
    as the role it means; None for any other line (priority changes, groups)."""
    words = line.split()
    if len(words) < 3 or words[0] != "INSTANCE":
        return None
    return KEEPALIVED_STATES.get(words[2])


# When a member that took over announces its addresses again (seconds).
ANNOUNCE_AGAIN_S = (0.05, 0.5)

# conntrackd, told of the role (conntrack-tools' primary-backup.sh, less the
# commit: with the external cache disabled the kernel already holds the
# peer's connections): the active member resyncs its cache with the kernel
# and offers it to the peer; a standby shortens the timers of what it holds
# (refreshed while the active one sends) and asks the active one for all,
# and again a little later (a member just placed on a host may ask before
# the HA network's path to its peer is whole: UDP, and lost).
CONNTRACKD_ON = {
    HaRole.active: (("-f",), ("-R",), ("-B",)),
    HaRole.standby: (("-t",), ("-n",), 2.0, ("-n",)),
    HaRole.fault: (("-t",),),
}


@dataclass
class _Member:
    role: HaRole
    lock: threading.Lock


class Roles:
    """The roles of this host's HA members. `configs` gives an appliance's
    config in force (None if it has none); `run_directory` its runtime
    directory."""

    def __init__(
        self,
        names: Names,
        configs: Callable[[str], ApplianceConfig | None],
        run_directory: Callable[[str], Path],
        electing: Callable[[str], bool] = lambda appliance_id: True,
    ) -> None:
        """`electing`: whether a member's keepalived runs (a "MASTER" read
        from its FIFO after it died, or a role address it left behind when
        killed, says nothing of the role)."""
        self.names = names
        self.configs = configs
        self.run_directory = run_directory
        self.electing = electing
        self._members: dict[str, _Member] = {}
        self._guard = threading.Lock()
        # Called after every change of role: (appliance id, role).
        self.listeners: list[Callable[[str, HaRole], None]] = []

    def _member(self, appliance_id: str, config: ApplianceConfig) -> _Member:
        with self._guard:
            member = self._members.get(appliance_id)
            if member is None:
                member = _Member(self._read_level(appliance_id, config), threading.Lock())
                self._members[appliance_id] = member
            return member

    def _read_level(self, appliance_id: str, config: ApplianceConfig) -> HaRole:
        """The role keepalived holds now: active while the role address is on
        the HA link (a new member has none yet: standby)."""
        link = config.ha_interface()
        namespace = self.names.appliance_netns(appliance_id)
        if self.fenced(appliance_id):
            return HaRole.fault
        if link is None or not netns.exists(namespace) or not self.electing(appliance_id):
            return HaRole.standby
        name = appliance_interface(link.role.value, link.mac)
        try:
            with netlink.netns(namespace) as inside:
                held = HA_ROLE_ADDRESS in netlink.addresses(inside, name)
        except FileNotFoundError:
            return HaRole.standby
        return HaRole.active if held else HaRole.standby

    def role(self, appliance_id: str) -> HaRole | None:
        """The member's role; None for an appliance that is no HA member."""
        config = self.configs(appliance_id)
        if config is None or config.ha is None:
            return None
        return self._member(appliance_id, config).role

    def roles(self) -> dict[str, str]:
        """Every known member's role (what the agent's health reports)."""
        with self._guard:
            return {key: member.role.value for key, member in sorted(self._members.items())}

    def role_links(self, config: ApplianceConfig) -> frozenset[str]:
        """The interfaces whose place on the wire the role decides, never an
        apply: an HA member's, but its HA link; none of anything else."""
        if config.ha is None:
            return frozenset()
        return frozenset(appliance_interface(i.role.value, i.mac) for i in config.on_the_wire())

    def standby_links(self, appliance_id: str, config: ApplianceConfig) -> frozenset[str]:
        """The interfaces off the wire now: all `role_links` of a member that
        is not active (what drift expects down)."""
        if config.ha is None or self._member(appliance_id, config).role is HaRole.active:
            return frozenset()
        return self.role_links(config)

    def transition(self, appliance_id: str, role: HaRole) -> None:
        """keepalived says the member is now `role`: its links follow, and
        conntrackd is told. Nothing for an appliance this host does not run
        as an HA member (an event of one just deleted)."""
        config = self.configs(appliance_id)
        if config is None or config.ha is None:
            return
        if role is HaRole.active and not self.electing(appliance_id):
            role = HaRole.fault  # an event its keepalived wrote before it died
        member = self._member(appliance_id, config)
        with member.lock:
            before, member.role = member.role, role
            self._put_on_wire(appliance_id, config, role is HaRole.active)
        # conntrackd is told at every event, a repeated one included: a new
        # member's first is "BACKUP", the role it already had, and that is
        # when it must ask its peer for the connections it serves.
        if config.ha.conntrack_sync:
            self._tell_conntrackd(appliance_id, role)
        if before is not role:
            log.warning("HA member %s: %s → %s", appliance_id, before.value, role.value)
            for listener in self.listeners:
                listener(appliance_id, role)

    def enforce(self, appliance_id: str, config: ApplianceConfig) -> None:
        """After an apply: the links as the role says now."""
        if config.ha is None:
            return
        member = self._member(appliance_id, config)
        with member.lock:
            self._put_on_wire(appliance_id, config, member.role is HaRole.active)

    def fence(self, appliance_id: str, fenced: bool) -> bool:
        """Take the member out of the election (or let it back in): its
        keepalived is held stopped (`held`); the caller stops it, and an
        apply starts it again once let back. True if the appliance is an
        HA member."""
        config = self.configs(appliance_id)
        if config is None or config.ha is None:
            return False
        directory = self.run_directory(appliance_id)
        if directory.is_dir():
            write_atomic(directory / FENCE_FILE, "1\n" if fenced else "0\n", durable=False)
        return True

    def fenced(self, appliance_id: str) -> bool:
        try:
            text = (self.run_directory(appliance_id) / FENCE_FILE).read_text()
        except FileNotFoundError:
            return False
        return text.strip() not in ("", "0")

    def held(self, appliance_id: str) -> frozenset[DaemonName]:
        """The daemons kept stopped: keepalived while the member is out of the election."""
        return frozenset({DaemonName.keepalived}) if self.fenced(appliance_id) else frozenset()

    def forget(self, appliance_id: str) -> None:
        with self._guard:
            self._members.pop(appliance_id, None)

    # --- the edge ----------------------------------------------------------------------

    def _put_on_wire(self, appliance_id: str, config: ApplianceConfig, on: bool) -> None:
        """Each interface's fabric end up (or down); when they go up, the
        interfaces' addresses announced."""
        fabric = self.names.fabric_netns
        namespace = self.names.appliance_netns(appliance_id)
        if not netns.exists(fabric):
            return
        changed = []
        with netlink.netns(fabric) as ns:
            for interface in config.on_the_wire():
                link = self.names.appliance_fabric_link(appliance_id, interface.mac)
                state = netlink.link_state(ns, link)
                if state is not None and state.up != on:
                    netlink.set_link(ns, link, state="up" if on else "down")
                    changed.append(interface)
        if on and changed:
            # A member that forwarded until it lost the role left neighbours
            # it was resolving without carrier (INCOMPLETE): taking over
            # again, its traffic would wait for the kernel's next retry, up
            # to a second (the benchmark saw 630-716 ms failovers from it).
            try:
                with netlink.netns(namespace) as inside:
                    for interface in changed:
                        name = appliance_interface(interface.role.value, interface.mac)
                        netlink.forget_unresolved(inside, name)
            except (FileNotFoundError, OSError) as error:
                log.info("HA member %s: forgetting unresolved neighbours: %s", appliance_id, error)
            announce: list[Announcement] = [
                (appliance_interface(i.role.value, i.mac), i.mac, i.addresses) for i in changed
            ]
            _announce_all(appliance_id, namespace, announce)
            # Again a little later: a bridge takes a port that comes up into
            # forwarding only once the kernel's link watch has seen its
            # carrier (a few ms later, asynchronously), and drops until then.
            for delay_s in ANNOUNCE_AGAIN_S:
                timer = threading.Timer(delay_s, _announce_all, (appliance_id, namespace, announce))
                timer.daemon = True
                timer.start()

    def _tell_conntrackd(self, appliance_id: str, role: HaRole) -> None:
        """conntrackd's commands for the new role, off the caller's path (a
        failover does not wait for them). Its client speaks over the UNIX
        socket: no need to enter the namespace."""
        conf = self.run_directory(appliance_id) / "conntrackd.conf"
        if not conf.exists():
            return

        def tell() -> None:
            for argv in CONNTRACKD_ON[role]:
                member = self._members.get(appliance_id)
                if member is None or member.role is not role:
                    return  # the role moved on: its own steps follow
                if isinstance(argv, float):
                    time.sleep(argv)
                    continue
                result = run(["conntrackd", "-C", str(conf), *argv], check=False, timeout_s=10)
                if result.returncode != 0:
                    log.info(
                        "HA member %s: conntrackd %s: %s",
                        appliance_id,
                        " ".join(argv),
                        result.stderr.strip(),
                    )

        threading.Thread(target=tell, name=f"conntrackd-{appliance_id}", daemon=True).start()


Announcement = tuple[str, str, Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]


def _announce_all(appliance_id: str, namespace: str, announce: list[Announcement]) -> None:
    """A gratuitous ARP and an unsolicited neighbour advertisement for each
    address of each interface (name, MAC, addresses)."""
    for name, mac, addresses in announce:
        v4 = [a.ip for a in addresses if isinstance(a, ipaddress.IPv4Interface)]
        v6 = [a.ip for a in addresses if isinstance(a, ipaddress.IPv6Interface)]
        try:
            garp.announce(namespace, name, mac, v4)
            garp.advertise(namespace, name, mac, v6)
        except OSError as error:  # gone meanwhile (given up, deleted)
            log.info("HA member %s: announcing %s failed: %s", appliance_id, name, error)
