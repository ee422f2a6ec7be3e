"""The failover baseline: bare keepalived between two namespaces, moving a
VIP itself, the way research measured it (`ha-routers.md` §3, kabench.sh),
in the same run as Astara's and under the same prefix.

Namespaces `<prefix>-kbr` (two bridges as Astara's fabric makes them:
forward delay 0, no multicast snooping: the LAN and the HA network),
`<prefix>-ka` and `<prefix>-kb` (the members: `lan0` 10.99.0.2 / .3 and
`ha0` 169.254.192.1 / .2, the HA addresses of Astara's lab) and
`<prefix>-kc` (the client, 10.99.0.10, which pings the VIP 10.99.0.1). Each
member's keepalived runs the instance Astara renders (VRRPv3, unicast to
the peer over `ha0`, `state BACKUP`, `nopreempt`, priority 254, the same
advert interval and gratuitous ARP settings) but holds the VIP itself, on
`lan0`: keepalived's own floor. Each member has a permanent neighbour entry
for its peer's HA address: without it, a member brought back with the
same address is sometimes not heard by the survivor (whose entry for it
failed while it was dead) within three adverts and takes the VIP for a
moment, black-holing the next failover (research §2.5).

A host death is what `bench.ha` does to an Astara member: keepalived's VRRP
child SIGKILLed, then its parent (the other way round, the child would send
a priority-0 advert: a handover, not a death), and both bridge ports set
down, from one netlink socket opened beforehand. The member is brought back
as kabench.sh did: its stale VIP removed, its ports up, keepalived started
again (as a backup).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from astara.appliance.render.ha import PRIORITY
from astara.linux import netlink
from astara.linux.process import Daemon
from astara.linux.run import run
from astara.testing.net import wait_for_ping
from bench.harness import Scratch

VIP = "10.99.0.1"
CLIENT = "10.99.0.10"
LAN_PREFIXLEN = 24
HA_PREFIXLEN = 18
VIRTUAL_ROUTER_ID = 7
# (LAN address, HA address, LAN MAC, HA MAC) by member.
MEMBERS = {
    "ka": ("10.99.0.2", "169.254.192.1", "02:00:0a:63:00:02", "02:00:a9:fe:c0:01"),
    "kb": ("10.99.0.3", "169.254.192.2", "02:00:0a:63:00:03", "02:00:a9:fe:c0:02"),
}
CLIENT_MAC = "02:00:0a:63:00:0a"


def keepalived_config(member: str, advert_interval_ms: int) -> str:
    """The member's keepalived.conf: Astara's instance (`render.ha`), with
    the VIP on the LAN instead of the role address on the HA link."""
    own, peer = MEMBERS[member][1], next(v[1] for k, v in MEMBERS.items() if k != member)
    return "\n".join(
        [
            "global_defs {",
            f"\trouter_id {member}",
            "\tvrrp_version 3",
            "\tvrrp_garp_master_delay 0",
            "\tvrrp_garp_master_repeat 1",
            "}",
            "vrrp_instance bench {",
            "\tstate BACKUP",
            "\tnopreempt",
            "\tinterface ha0",
            f"\tvirtual_router_id {VIRTUAL_ROUTER_ID}",
            f"\tpriority {PRIORITY}",
            f"\tadvert_int {advert_interval_ms / 1000:.2f}",
            f"\tunicast_src_ip {own}",
            "\tunicast_peer {",
            f"\t\t{peer}",
            "\t}",
            "\tvirtual_ipaddress {",
            f"\t\t{VIP}/{LAN_PREFIXLEN} dev lan0",
            "\t}",
            "\tgarp_master_delay 0",
            "}",
            "",
        ]
    )


class KeepalivedPair:
    """The two members (a `bench.ha_failover.Pair`). Holds a netlink socket
    in each namespace for the whole run."""

    members = ("ka", "kb")

    def __init__(self, scratch: Scratch, directory: Path, advert_interval_ms: int) -> None:
        self.prefix = scratch.prefix
        self.directory = directory
        self.advert_interval_ms = advert_interval_ms
        self.bridges = scratch.netns("kbr")
        self.namespaces = {m: scratch.netns(m) for m in self.members}
        self.client = scratch.netns("kc")
        self._stack = ExitStack()
        self._build()
        self._sockets: dict[str, Any] = {
            name: self._stack.enter_context(netlink.netns(namespace))
            for name, namespace in [("kbr", self.bridges), *self.namespaces.items()]
        }
        self._ports = {
            m: [
                self._sockets["kbr"].requests.link_index(self.port(m, kind))
                for kind in ("lan", "ha")
            ]
            for m in self.members
        }

    def port(self, member: str, kind: str) -> str:
        """A member's bridge port (in the bridges' namespace)."""
        return f"{self.prefix}{kind[0]}{member}"

    def _build(self) -> None:
        bridges, prefix = self.bridges, self.prefix
        for kind in ("lan", "ha"):
            bridge = f"{prefix}b{kind}"
            settings = ("forward_delay", "0", "mcast_snooping", "0")
            run(["ip", "-n", bridges, "link", "add", bridge, "type", "bridge", *settings])
            run(["ip", "-n", bridges, "link", "set", bridge, "up"])
        plugs = [
            (self.client, "lan0", CLIENT_MAC, f"{CLIENT}/{LAN_PREFIXLEN}", f"{prefix}lkc", "lan"),
        ]
        for member, (lan, ha, lan_mac, ha_mac) in MEMBERS.items():
            namespace = self.namespaces[member]
            lan_port, ha_port = self.port(member, "lan"), self.port(member, "ha")
            plugs.append((namespace, "lan0", lan_mac, f"{lan}/{LAN_PREFIXLEN}", lan_port, "lan"))
            plugs.append((namespace, "ha0", ha_mac, f"{ha}/{HA_PREFIXLEN}", ha_port, "ha"))
        for namespace, inside, mac, address, port, kind in plugs:
            run(
                [
                    *("ip", "-n", bridges, "link", "add", port, "type", "veth"),
                    *("peer", "name", inside, "address", mac, "netns", namespace),
                ]
            )
            run(["ip", "-n", bridges, "link", "set", port, "master", f"{prefix}b{kind}", "up"])
            run(["ip", "-n", namespace, "addr", "add", address, "dev", inside])
            run(["ip", "-n", namespace, "link", "set", inside, "up"])
        for member in self.members:
            peer = next(m for m in self.members if m != member)
            _, peer_ha, _, peer_mac = MEMBERS[peer]
            run(
                [
                    *("ip", "-n", self.namespaces[member], "neigh", "replace", peer_ha),
                    *("lladdr", peer_mac, "dev", "ha0", "nud", "permanent"),
                ]
            )
            (self.directory / f"{member}.conf").write_text(
                keepalived_config(member, self.advert_interval_ms)
            )

    def daemon(self, member: str) -> Daemon:
        return Daemon(
            self.namespaces[member],
            self.directory / f"{member}.pid",
            str(self.directory / f"{member}.conf"),
        )

    def start(self, member: str) -> None:
        """keepalived as Astara starts it (VRRP only, no syslog, daemonized)."""
        child = self.directory / f"{member}-vrrp.pid"
        child.unlink(missing_ok=True)  # one killed may not be reaped yet
        self.daemon(member).start(
            [
                *("keepalived", "-P", "-G", "-f", str(self.directory / f"{member}.conf")),
                *("-p", str(self.directory / f"{member}.pid"), "-r", str(child)),
            ],
            fresh=True,
        )

    def stop(self) -> None:
        for member in self.members:
            self.daemon(member).stop()
            pid = _read_pid(self.directory / f"{member}-vrrp.pid")
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._stack.close()

    # --- Pair -------------------------------------------------------------------------

    def holders(self) -> list[str]:
        """The members holding the VIP now."""
        found = []
        for member in self.members:
            held = netlink.addresses(self._sockets[member], "lan0")
            if any(str(a.ip) == VIP for a in held):
                found.append(member)
        return found

    def running(self, member: str) -> bool:
        return _read_pid(self.directory / f"{member}-vrrp.pid") is not None

    def active(self) -> str | None:
        """The one member holding the VIP whose keepalived runs (one killed
        keeps its VIP: nothing removed it)."""
        holders = [m for m in self.holders() if self.running(m)]
        return holders[0] if len(holders) == 1 else None

    def settled(self) -> tuple[str, str] | None:
        holders = self.holders()
        if len(holders) != 1 or not all(self.running(m) for m in self.members):
            return None
        return holders[0], next(m for m in self.members if m != holders[0])

    def kill(self, member: str) -> None:
        child = _read_pid(self.directory / f"{member}-vrrp.pid")
        parent = _read_pid(self.directory / f"{member}.pid")
        requests = self._sockets["kbr"].requests
        for pid in (child, parent):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for index in self._ports[member]:
            requests.set_link(index, up=False)

    def inspect(self, member: str) -> dict[str, Any]:
        return {}

    def revive(self, member: str) -> None:
        namespace = self.namespaces[member]
        run(
            ["ip", "-n", namespace, "addr", "del", f"{VIP}/{LAN_PREFIXLEN}", "dev", "lan0"],
            check=False,
        )
        requests = self._sockets["kbr"].requests
        for index in self._ports[member]:
            requests.set_link(index, up=True)
        self.start(member)


def _read_pid(path: Path) -> int | None:
    """The pid a pid file names, if that process is alive."""
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


@contextmanager
def keepalived_pair(
    scratch: Scratch, directory: Path, advert_interval_ms: int
) -> Iterator[KeepalivedPair]:
    """The baseline, both members started (one, then the other a second
    later, as kabench.sh did) and the VIP answering; removed afterwards."""
    pair = KeepalivedPair(scratch, directory, advert_interval_ms)
    try:
        pair.start("ka")
        wait_for_ping(pair.client, VIP)
        pair.start("kb")
        yield pair
    finally:
        pair.stop()
        for namespace in (pair.client, *pair.namespaces.values(), pair.bridges):
            scratch.remove(namespace)
