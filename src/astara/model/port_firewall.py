"""Workload ports' security as nftables scripts for the host's fabric
namespace (pure: text in, text out; `astara.fabric.firewall` runs them).

Why this shape (docs/architecture.md, "Port security"): this kernel has no
conntrack in the bridge family, but br_netfilter hands bridged IP packets to
the inet hooks, where conntrack works. There the bridge is both the input
and the output device, so the bridge family tells the inet family which
ports a packet crosses, in its mark:

- bridge `prerouting`: by input port (`iifname`), a port's `from_N` chain
  sets the mark's high 16 bits to N and drops what the port may not send
  (another MAC or address, ARP for another's address, router
  advertisements, DHCP server replies, other ethertypes);
- bridge `forward`: by output port, its `to_N` chain ORs N into the low bits;
- inet `prerouting`: the bridge's conntrack zone (tenant networks may use
  the same addresses);
- inet `forward`: the sender's `out_N` (its egress: what its groups allow
  goes on to `allowed_out`, which hands it to the receiver; the rest is
  dropped) and the receiver's `in_N` (its ingress: what its groups allow is
  accepted, the rest dropped), each after `ct state established,related`.

A group's rules are one pair of chains on the host (`g<hash>_in`,
`g<hash>_out`), which every port in the group jumps to: a port costs a few
rules whatever its groups hold, and a group's rule changed is one chain
rewritten, not one per port.

Ports without security (routers, DHCP appliances, ports with port security
off) have no chains: their bits stay 0 and nothing filters them. Remote
groups and address groups are named interval sets (`s<hash>4`, `s<hash>6`)
shared by every rule that names them: a member added or removed is one
element, and the rules stay as they are.

Every script is one nftables transaction: it applies whole or not at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from astara.ipam import eui64
from astara.model.fabric import AddressSetSpec, PortSecurity, SecurityGroupSpec, SecurityRuleSpec
from astara.naming import short_hash

BRIDGE = "bridge astara_ports"
INET = "inet astara_sg"
ALLOWED_OUT = "allowed_out"
MAX_PORTS = 0xFFFF  # a port's index fills 16 bits of the mark
PORT_PROTOCOLS = {6, 17, 33, 132, 136}  # tcp, udp, dccp, sctp, udplite: ports to match
ICMP, ICMPV6 = 1, 58
# What a workload needs whatever its groups say (Neutron's firewall allows the same).
_OUT_ALWAYS = (
    "meta nfproto ipv4 udp sport 68 udp dport 67",
    "meta nfproto ipv6 udp sport 546 udp dport 547",
    "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert,"
    " mld-listener-report, mld-listener-done, mld2-listener-report }",
)
_IN_ALWAYS = (
    "meta nfproto ipv4 udp sport 67 udp dport 68",
    "meta nfproto ipv6 udp sport 547 udp dport 546",
    "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query }",
)
# What each direction's allowed traffic does (see the module's doc).
_VERDICT = {"egress": f"goto {ALLOWED_OUT}", "ingress": "accept"}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def skeleton() -> str:
    """The tables, hooks and dispatch maps, made if missing (idempotent)."""
    return "\n".join(
        [
            f"add table {BRIDGE}",
            f"add map {BRIDGE} from_port {{ type ifname : verdict; }}",
            f"add map {BRIDGE} to_port {{ type ifname : verdict; }}",
            f"add chain {BRIDGE} prerouting"
            " { type filter hook prerouting priority -300; policy accept; }",
            f"add chain {BRIDGE} forward"
            " { type filter hook forward priority -300; policy accept; }",
            f"add table {INET}",
            f"add map {INET} zone_of {{ type ifname : verdict; }}",
            f"add map {INET} out_of {{ type mark : verdict; }}",
            f"add map {INET} in_of {{ type mark : verdict; }}",
            f"add chain {INET} prerouting"
            " { type filter hook prerouting priority -300; policy accept; }",
            f"add chain {INET} forward {{ type filter hook forward priority 0; policy accept; }}",
            # The base chains' one rule each, written anew (flushed first).
            f"flush chain {BRIDGE} prerouting",
            f"add rule {BRIDGE} prerouting iifname vmap @from_port",
            f"flush chain {BRIDGE} forward",
            f"add rule {BRIDGE} forward oifname vmap @to_port",
            f"flush chain {INET} prerouting",
            f"add rule {INET} prerouting iifname vmap @zone_of",
            f"flush chain {INET} forward",
            f"add rule {INET} forward meta mark and 0xffff0000 vmap @out_of",
            f"add rule {INET} forward meta mark and 0x0000ffff vmap @in_of",
            # The sender's egress allowed it: the receiver's ingress decides.
            f"add chain {INET} {ALLOWED_OUT}",
            f"flush chain {INET} {ALLOWED_OUT}",
            f"add rule {INET} {ALLOWED_OUT} meta mark and 0x0000ffff vmap @in_of",
            f"add rule {INET} {ALLOWED_OUT} accept",
            "",
        ]
    )


def zone(bridge: str, number: int) -> str:
    """The conntrack zone of a bridge's traffic."""
    return "\n".join(
        [
            f"add chain {INET} zone_{number}",
            f"flush chain {INET} zone_{number}",
            f"add rule {INET} zone_{number} ct zone set {number}",
            f'add element {INET} zone_of {{ "{bridge}" : jump zone_{number} }}',
            "",
        ]
    )


def remove_zone(bridge: str, number: int) -> str:
    return "\n".join(
        [
            f'delete element {INET} zone_of {{ "{bridge}" }}',
            f"delete chain {INET} zone_{number}",
            "",
        ]
    )


def set_name(set_id: str, version: int) -> str:
    return f"s{short_hash(set_id, length=12)}{version}"


def collapsed(addresses: Iterable[Network], version: int) -> set[str]:
    """A set's elements: its prefixes of one family, overlaps merged (an
    interval set refuses overlapping elements)."""
    found = [a for a in addresses if a.version == version]
    return {str(n) for n in ipaddress.collapse_addresses(found)}  # type: ignore[type-var]


def address_set(set_id: str, wanted: AddressSetSpec, held: AddressSetSpec | None = None) -> str:
    """Make the set's two families hold `wanted`: from `held` (what they
    hold now), only the elements that differ; removals first."""
    lines = []
    for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        name = set_name(set_id, version)
        lines.append(f"add set {INET} {name} {{ type {kind}; flags interval; }}")
        new = collapsed(wanted.addresses, version)
        old = collapsed(held.addresses, version) if held is not None else set()
        if held is None:
            lines.append(f"flush set {INET} {name}")
        if old - new:
            lines.append(f"delete element {INET} {name} {{ {', '.join(sorted(old - new))} }}")
        if new - old:
            lines.append(f"add element {INET} {name} {{ {', '.join(sorted(new - old))} }}")
    return "\n".join([*lines, ""])


def remove_address_set(set_id: str) -> str:
    return "\n".join(f"delete set {INET} {set_name(set_id, v)}" for v in (4, 6)) + "\n"


def _mark(index: int, high: bool) -> str:
    return f"0x{index << 16:08x}" if high else f"0x{index:08x}"


def _anti_spoofing(index: int, security: PortSecurity) -> list[str]:
    """The `from_N` rules: what the port may send at all."""
    macs = sorted({a.mac for a in security.allowed})
    v4 = sorted(collapsed((a.ip for a in security.allowed), 4))
    # IPv6: its addresses, and the link-local addresses its MACs form.
    link_local = ipaddress.IPv6Network("fe80::/64")
    v6 = sorted(
        collapsed(
            [a.ip for a in security.allowed]
            + [ipaddress.IPv6Network(f"{eui64(link_local, m)}/128") for m in macs],
            6,
        )
    )
    chain = f"add rule {BRIDGE} from_{index}"
    rules = [f"{chain} meta mark set {_mark(index, high=True)}"]
    if not macs:
        return [*rules, f"{chain} drop"]
    mac_set = "{ " + ", ".join(macs) + " }"
    rules += [
        f"{chain} ether saddr != {mac_set} drop",
        f"{chain} ether type != {{ ip, ip6, arp }} drop",
        f"{chain} arp saddr ether != {mac_set} drop",
        # Router advertisements and DHCP answers are the network's to send.
        f"{chain} icmpv6 type nd-router-advert drop",
        f"{chain} udp sport 67 drop",
        f"{chain} udp sport 547 drop",
        # DHCP and ARP probes come from no address yet; DAD from ::.
        f"{chain} ip saddr 0.0.0.0 udp sport 68 udp dport 67 return",
        f"{chain} arp saddr ip 0.0.0.0 return",
        f"{chain} ip6 saddr :: icmpv6 type {{ nd-neighbor-solicit, mld2-listener-report }} return",
    ]
    if v4:
        v4_set = "{ " + ", ".join(v4) + " }"
        rules += [f"{chain} arp saddr ip != {v4_set} drop", f"{chain} ip saddr != {v4_set} drop"]
    else:
        rules += [f"{chain} ether type {{ ip, arp }} drop"]
    v6_set = "{ " + ", ".join(v6) + " }"
    rules.append(f"{chain} ip6 saddr != {v6_set} drop")
    # A neighbour advertisement for an address not its own would take it over
    # (the ARP rules' IPv6 twin). nft has no name for the target: its bytes.
    targets = ", ".join(_integer_range(ipaddress.IPv6Network(n)) for n in v6)
    rules.append(f"{chain} icmpv6 type nd-neighbor-advert @th,64,128 != {{ {targets} }} drop")
    return rules


def _integer_range(network: ipaddress.IPv6Network) -> str:
    first, last = int(network.network_address), int(network.broadcast_address)
    return f"0x{first:032x}" if first == last else f"0x{first:032x}-0x{last:032x}"


def rule_match(rule: SecurityRuleSpec) -> str | None:
    """One rule's match (without its verdict); None if it can never match
    (it names a set this host does not hold)."""
    version = 4 if rule.ethertype == "IPv4" else 6
    parts = [f"meta nfproto ipv{version}"]
    family = "ip" if version == 4 else "ip6"
    side = "saddr" if rule.direction == "ingress" else "daddr"
    if rule.remote_prefix is not None and rule.remote_prefix.prefixlen > 0:
        parts.append(f"{family} {side} {rule.remote_prefix}")
    if rule.remote_set is not None:
        parts.append(f"{family} {side} @{set_name(rule.remote_set, version)}")
    if rule.protocol is not None:
        parts.append(f"meta l4proto {rule.protocol}")
        low, high = rule.port_range_min, rule.port_range_max
        if rule.protocol in PORT_PROTOCOLS and low is not None:
            span = str(low) if high in (None, low) else f"{low}-{high}"
            parts.append(f"th dport {span}")
        elif rule.protocol in (ICMP, ICMPV6) and low is not None:
            icmp = "icmp" if rule.protocol == ICMP else "icmpv6"
            if (rule.protocol == ICMP) != (version == 4):
                return None  # ICMP of the other family: nothing to match
            parts.append(f"{icmp} type {low}")
            if high is not None:
                parts.append(f"{icmp} code {high}")
    return " ".join(parts)


def group_chains(group_id: str) -> tuple[str, str]:
    """A group's (ingress, egress) chains."""
    name = f"g{short_hash(group_id, length=12)}"
    return f"{name}_in", f"{name}_out"


def group(group_id: str, spec: SecurityGroupSpec | None, sets: Iterable[str]) -> str:
    """Make (or remake) the group's chains: its rules, each sending what it
    matches on (`accept` in, `goto allowed_out` out). Rules of one shape (a
    prefix or none, a port protocol, a port range) are one lookup in a
    concatenated interval set, however many there are; the rest are rules
    of their own. A rule naming a set this host does not hold is left out
    until the set comes; no spec (a group not held yet): empty chains,
    which allow nothing."""
    held_sets = set(sets)
    into, out = group_chains(group_id)
    lines = []
    for chain in (into, out):
        lines += [f"add chain {INET} {chain}", f"flush chain {INET} {chain}"]
    seen: set[tuple[str, str]] = set()
    batched: dict[tuple[str, int], list[tuple[Network, int, int, int]]] = {}
    for rule in spec.rules if spec is not None else []:
        if rule.remote_set is not None and rule.remote_set not in held_sets:
            continue
        key = _batchable(rule)
        if key is not None:
            batched.setdefault((rule.direction, key[0].version), []).append(key)
            continue
        match = rule_match(rule)
        if match is None or (rule.direction, match) in seen:
            continue
        seen.add((rule.direction, match))
        chain = into if rule.direction == "ingress" else out
        lines.append(f"add rule {INET} {chain} {match} {_VERDICT[rule.direction]}")
    for (direction, version), keys in sorted(batched.items()):
        chain = into if direction == "ingress" else out
        family = "ip" if version == 4 else "ip6"
        side = "saddr" if direction == "ingress" else "daddr"
        disjoint, overlapping = _disjoint(keys)
        if disjoint:
            elements = ", ".join(f"{n} . {p} . {low}-{high}" for n, p, low, high in disjoint)
            lines.append(
                f"add rule {INET} {chain} meta nfproto ipv{version}"
                f" {family} {side} . meta l4proto . th dport {{ {elements} }}"
                f" {_VERDICT[direction]}"
            )
        for network, protocol, low, high in overlapping:
            match = f"meta nfproto ipv{version} meta l4proto {protocol} th dport {low}-{high}"
            if network.prefixlen:
                match += f" {family} {side} {network}"
            lines.append(f"add rule {INET} {chain} {match} {_VERDICT[direction]}")
    return "\n".join([*lines, ""])


def _batchable(rule: SecurityRuleSpec) -> tuple[Network, int, int, int] | None:
    """A rule's (prefix, protocol, first port, last port), if it is of the
    shape one set lookup serves: a port protocol, no remote set."""
    if rule.protocol not in PORT_PROTOCOLS or rule.remote_set is not None:
        return None
    version = 4 if rule.ethertype == "IPv4" else 6
    network = rule.remote_prefix or ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
    low = rule.port_range_min if rule.port_range_min is not None else 0
    high = rule.port_range_max if rule.port_range_max is not None else 65535
    return network, rule.protocol, low, max(low, high)


def _disjoint(
    keys: list[tuple[Network, int, int, int]],
) -> tuple[list[tuple[Network, int, int, int]], list[tuple[Network, int, int, int]]]:
    """The keys split into those that can share one interval set (no two
    overlap: the kernel refuses overlapping elements) and the rest. A sweep
    over each protocol's port ranges compares only keys whose ranges meet."""
    kept: list[tuple[Network, int, int, int]] = []
    rest: list[tuple[Network, int, int, int]] = []
    unique = sorted(
        set(keys), key=lambda k: (k[1], k[2], k[3], int(k[0].network_address), k[0].prefixlen)
    )
    active: list[tuple[Network, int, int, int]] = []
    for key in unique:
        network, protocol, low, _ = key
        active = [a for a in active if a[1] == protocol and a[3] >= low]
        if any(a[0].overlaps(network) for a in active):  # type: ignore[arg-type,unused-ignore]
            rest.append(key)
            continue
        kept.append(key)
        active.append(key)
    return kept, rest


def remove_group(group_id: str) -> str:
    """The group's chains gone (no port may jump to them any more)."""
    return "".join(f"delete chain {INET} {chain}\n" for chain in group_chains(group_id))


def port(index: int, link: str, security: PortSecurity) -> str:
    """Make (or remake) port `index`'s chains for its fabric link `link`:
    its anti-spoofing, a jump to each of its groups' chains (which must
    exist: `group`), and its dispatch."""
    if not 1 <= index <= MAX_PORTS:
        raise ValueError(f"port index {index} is out of 1-{MAX_PORTS}")
    lines = []
    for table, chain in ((BRIDGE, f"from_{index}"), (BRIDGE, f"to_{index}")):
        lines += [f"add chain {table} {chain}", f"flush chain {table} {chain}"]
    lines += _anti_spoofing(index, security)
    # Only what the inet hooks see reaches the port: a VLAN-tagged frame
    # would pass its ingress unfiltered (and its guest take it as untagged).
    lines.append(f"add rule {BRIDGE} to_{index} ether type != {{ ip, ip6, arp }} drop")
    lines.append(f"add rule {BRIDGE} to_{index} meta mark set meta mark or {_mark(index, False)}")
    out, into = f"out_{index}", f"in_{index}"
    for chain in (out, into):
        lines += [f"add chain {INET} {chain}", f"flush chain {INET} {chain}"]
    verdicts = ((out, _VERDICT["egress"]), (into, _VERDICT["ingress"]))
    if security.stateful:
        for chain, verdict in verdicts:
            lines += [
                f"add rule {INET} {chain} ct state established,related {verdict}",
                f"add rule {INET} {chain} ct state invalid drop",
            ]
    lines += [f"add rule {INET} {out} {rule} {_VERDICT['egress']}" for rule in _OUT_ALWAYS]
    lines += [f"add rule {INET} {into} {rule} {_VERDICT['ingress']}" for rule in _IN_ALWAYS]
    for group_id in dict.fromkeys(security.groups):
        group_in, group_out = group_chains(group_id)
        lines += [
            f"add rule {INET} {out} jump {group_out}",
            f"add rule {INET} {into} jump {group_in}",
        ]
    lines += [f"add rule {INET} {out} drop", f"add rule {INET} {into} drop"]
    lines += [
        f'add element {BRIDGE} from_port {{ "{link}" : jump from_{index} }}',
        f'add element {BRIDGE} to_port {{ "{link}" : jump to_{index} }}',
        f"add element {INET} out_of {{ {_mark(index, True)} : jump {out} }}",
        f"add element {INET} in_of {{ {_mark(index, False)} : jump {into} }}",
        "",
    ]
    return "\n".join(lines)


def remove_port(index: int, link: str) -> str:
    """Port `index`'s chains and dispatch gone (its elements first: a chain
    a map still jumps to cannot be deleted)."""
    return "\n".join(
        [
            f'delete element {BRIDGE} from_port {{ "{link}" }}',
            f'delete element {BRIDGE} to_port {{ "{link}" }}',
            f"delete element {INET} out_of {{ {_mark(index, True)} }}",
            f"delete element {INET} in_of {{ {_mark(index, False)} }}",
            *(f"delete chain {BRIDGE} {c}_{index}" for c in ("from", "to")),
            *(f"delete chain {INET} {c}_{index}" for c in ("out", "in")),
            "",
        ]
    )


def sets_of(groups: Iterable[SecurityGroupSpec]) -> set[str]:
    return {r.remote_set for g in groups for r in g.rules if r.remote_set is not None}
