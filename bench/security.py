"""Port security's costs (issue 11's figures), on the agent's own code
(`PortSecurityManager`) in a fabric namespace under a unique prefix:

- `security.membership_change`: one port added to (and removed from) a
  remote group that 1,000 filtered ports' group names, applied on the host.
  Baseline, in the same run: rewriting that group's rules with the remote
  group written out as a rule per member, which is what a design without
  sets (the iptables agents') pays on every change. Goal: at most 100 ms.
- `security.new_connections`: new TCP connections per second to a port
  whose group has 1,000 rules and a remote group of 1,000 members (the
  allowing rule last), beside the same port unfiltered. Goal: >= 0.9x.
- `security.throughput`: iperf3 TCP through that filtered port, ÷ unfiltered.

The 999 other filtered ports have their chains in the ruleset but no veth:
a membership change touches the set only, whatever the ports' links are.
Each figure alternates filtered and unfiltered runs, and the median counts.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
from functools import partial
from pathlib import Path

from astara.agent.security import PortSecurityManager
from astara.agent.store import JsonStore
from astara.fabric import firewall
from astara.linux.run import run
from astara.model import port_firewall
from astara.model.fabric import AddressSetSpec, PortSpec, SecurityGroupSpec
from astara.naming import Names
from astara.testing.agent import unique_prefix
from astara.testing.net import wait_for_ping
from bench.harness import Report, Scratch, Settings, background, log, median, ratio, timed
from bench.throughput import Path as IperfPath
from bench.throughput import iperf

PORTS = 1_000
RULES = 1_000
MEMBERS = 1_000
SERVER, CLIENT = "10.30.0.10", "10.30.0.11"
ACCEPT_PORT = 5000
NETWORK = "net"
SET = "g-big"

_SERVER_CODE = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {ACCEPT_PORT}))
s.listen(4096)
while True:
    c, _ = s.accept()
    c.close()
"""
_CLIENT_CODE = """
import socket, struct, sys, time
address, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
linger = struct.pack("ii", 1, 0)
done, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    c.connect((address, port))
    c.close()
    done += 1
print(done / seconds)
"""


def _group() -> SecurityGroupSpec:
    """1,000 rules that the tested traffic passes by, then the one that
    allows it (from the remote group), and egress to anywhere."""
    rules = [
        {
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": 6,
            "port_range_min": 10_000 + i,
            "port_range_max": 10_000 + i,
            "remote_prefix": f"192.0.{i // 250}.{i % 250 + 1}/32",
        }
        for i in range(RULES - 2)
    ]
    rules += [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": 6, "remote_set": SET},
        {"direction": "egress", "ethertype": "IPv4"},
    ]
    return SecurityGroupSpec.model_validate({"rules": rules})


def _members(extra: int = 0) -> AddressSetSpec:
    hosts = [str(a) for a in ipaddress.ip_network("10.31.0.0/20").hosts()][: MEMBERS - 1 + extra]
    return AddressSetSpec.model_validate({"addresses": [f"{CLIENT}/32", *hosts]})


def _spec(mac: str, address: str, secured: bool) -> PortSpec:
    security = {"groups": ["big"], "allowed": [{"mac": mac, "ip": f"{address}/32"}]}
    return PortSpec.model_validate(
        {
            "network_id": NETWORK,
            "mac": mac,
            "netns": "unused",
            "security": security if secured else None,
        }
    )


def _connections_per_s(client: str, seconds: float) -> float:
    argv = ["python3", "-c", _CLIENT_CODE, SERVER, str(ACCEPT_PORT), str(seconds)]
    return float(run(argv, netns=client, timeout_s=seconds + 30).stdout.strip())


def bench_security(settings: Settings, report: Report) -> None:
    prefix = unique_prefix("s")
    names = Names(prefix)
    with Scratch(prefix) as scratch, tempfile.TemporaryDirectory(prefix="astara-bench-") as work:
        fabric = scratch.netns("fabric")
        assert fabric == names.fabric_netns
        bridge = names.bridge(NETWORK)
        run(["ip", "-n", fabric, "link", "add", bridge, "type", "bridge"])
        run(["ip", "-n", fabric, "link", "set", bridge, "up"])
        ends = {}
        for name, address, mac in (
            ("server", SERVER, "fa:16:3e:30:00:10"),
            ("client", CLIENT, "fa:16:3e:30:00:11"),
        ):
            namespace = scratch.netns(name)
            link = names.port_fabric_link(name)
            run(
                [
                    "ip",
                    "-n",
                    fabric,
                    "link",
                    "add",
                    link,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    namespace,
                ]
            )
            run(["ip", "-n", fabric, "link", "set", link, "master", bridge, "up"])
            run(["ip", "-n", namespace, "link", "set", "eth0", "address", mac])
            run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
            ends[name] = (namespace, mac, address)
        wait_for_ping(ends["client"][0], SERVER)
        specs = {
            f"filler-{i:04d}": _spec(
                f"fa:16:3e:31:{i // 256:02x}:{i % 256:02x}", f"10.32.{i // 250}.{i % 250 + 1}", True
            )
            for i in range(PORTS - 1)
        }
        manager = PortSecurityManager(names, JsonStore(Path(work)), lambda: specs)
        manager.put_set(SET, _members())
        manager.put_group("big", _group())
        log(f"security: {PORTS - 1} filler ports' chains")
        for port_id, spec in specs.items():
            manager.port_changed(port_id, spec)
        server_ns, server_mac, _ = ends["server"]
        client_ns = ends["client"][0]
        secured, open_ = _spec(server_mac, SERVER, True), _spec(server_mac, SERVER, False)

        def filtered(on: bool) -> None:
            specs["server"] = secured if on else open_
            manager.port_changed("server", specs["server"])

        # Membership: one member in, one out (the removal ends its flows too).
        # Baseline: the same group with its remote group written out as one
        # rule per member, rewritten (what a design without sets pays).
        expanded = SecurityGroupSpec.model_validate(
            {
                "rules": [
                    *(r.model_dump() for r in _group().rules if r.remote_set is None),
                    *(
                        {
                            "direction": "ingress",
                            "ethertype": "IPv4",
                            "protocol": 6,
                            "remote_prefix": str(a),
                        }
                        for a in _members(extra=1).addresses
                    ),
                ]
            }
        )
        rewrite = port_firewall.group("expanded", expanded, ())
        changes, rewrites = [], []
        joined, left = _members(extra=1), _members()
        deltas = []  # the kernel's part alone: the set's one element, in and out
        add = port_firewall.address_set(SET, joined, left)
        remove = port_firewall.address_set(SET, left, joined)
        for _ in range(settings.repeats * 3):
            changes.append(timed(partial(manager.put_set, SET, joined)))
            changes.append(timed(partial(manager.put_set, SET, left)))
            deltas.append(timed(partial(firewall.apply, names, add)))
            deltas.append(timed(partial(firewall.apply, names, remove)))
            rewrites.append(timed(partial(firewall.apply, names, rewrite)))
        change_s, rewrite_s = median(changes), median(rewrites)
        report.emit(
            {
                "name": "security.membership_change",
                "ports": PORTS,
                "members": MEMBERS,
                "rules": RULES,
                "change_ms": round(change_s * 1000, 2),
                "runs_ms": [round(c * 1000, 2) for c in changes],
                "set_delta_ms": round(median(deltas) * 1000, 2),
                "baseline": "rewriting the group with its remote group as a rule per member",
                "baseline_ms": round(rewrite_s * 1000, 2),
                "ratio": ratio(change_s, rewrite_s),
                "goal_ms": 100,
            }
        )
        # New connections, filtered and not, alternated.
        rates: dict[bool, list[float]] = {True: [], False: []}
        seconds = 1.0 if settings.quick else 3.0
        with background(server_ns, ["python3", "-c", _SERVER_CODE]):
            wait_for_ping(client_ns, SERVER)
            run(["sleep", "0.5"])
            for _ in range(settings.repeats):
                for on in (True, False):
                    filtered(on)
                    rates[on].append(_connections_per_s(client_ns, seconds))
                    log(f"security: {'filtered' if on else 'open'} {rates[on][-1]:.0f} conn/s")
        report.emit(
            {
                "name": "security.new_connections",
                "rules": RULES,
                "members": MEMBERS,
                "connections_per_s": round(median(rates[True])),
                "runs": [round(r) for r in rates[True]],
                "baseline": "the same port unfiltered",
                "baseline_connections_per_s": round(median(rates[False])),
                "baseline_runs": [round(r) for r in rates[False]],
                "ratio": ratio(median(rates[True]), median(rates[False])),
                "goal_ratio": 0.9,
            }
        )
        bits: dict[bool, list[float]] = {True: [], False: []}
        path = IperfPath("filtered", client_ns, server_ns, SERVER)
        for _ in range(settings.throughput_repeats):
            for on in (True, False):
                filtered(on)
                bits[on].append(iperf(path, settings.iperf_duration_s).bits_per_s)
        report.emit(
            {
                "name": "security.throughput",
                "rules": RULES,
                "throughput_bits_per_s": round(median(bits[True])),
                "runs_bits_per_s": [round(b) for b in bits[True]],
                "baseline": "the same port unfiltered",
                "baseline_bits_per_s": round(median(bits[False])),
                "ratio": ratio(median(bits[True]), median(bits[False])),
            }
        )
        firewall.apply(names, "delete table bridge astara_ports\ndelete table inet astara_sg\n")
        log(json.dumps({"security": "done"}))
