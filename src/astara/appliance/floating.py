"""Floating IPs changed alone, decided as a delta (pure).

A PUT whose config differs from the one in force only in its floating IPs
(the commonest change a router sees) need not cost what the whole config
costs: at 10,000 floating IPs, parsing the body into the schema, validating
and rendering it, `nft -c` of the whole table, listing the table and reading
every local route take about a second, while the kernel needs a few
milliseconds for one element and one route.

`read_body` reads a PUT body as plain JSON. `Known` holds the config in
force the way bodies are compared: its other fields, and its floating IPs
as the entries a body holds, as (floating, fixed) text pairs, and as the
texts its hash and its ruleset are made of, all in order. `plan_change`
decides whether the body is the config in force with other floating IPs:
only the window between what the two lists of entries start and end with
alike is read entry by entry, and what is outside it is reused by slicing.
If so it returns the new config (the in-force one with the floating IPs
swapped, the unchanged ones reused as they are), its hash, and the plan:
elements deleted and added in one transaction, local routes removed and
added, conntrack forgotten for floating IPs gone or moved, gratuitous ARP
for the new ones. Only the added floating IPs are parsed and validated
(`validate_semantics` over the in-force config with just them), uniqueness
is checked against the pairs in force, and the hash and the ruleset text
are joined from the texts kept (the same as `schema.config_hash` and
`render_nftables` make, which the unit tests check). Anything it cannot vouch for cheaply (another
field changed, a spelling the schema would rewrite, a value it refuses)
returns None: the body goes through the full apply, which answers errors
as before. Whether the appliance still stands as the last apply left it
(the genid, links, daemons) is the caller's cheap observation
(`plan.settled`), checked before.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from astara.appliance.actions import (
    Announce,
    ChangeFloatingElements,
    ChangeFloatingRoutes,
    DeltaAction,
    DeltaPlan,
    ForgetConntrack,
    ruleset_digest,
)
from astara.appliance.record import Splice
from astara.appliance.render.nftables import TABLE_FAMILY, TABLE_NAME, render_nftables
from astara.appliance.schema import (
    ApplianceConfig,
    FloatingIp,
    FloatingPair,
    validate_semantics,
)
from astara.naming import appliance_interface

FLOATING_IPS = "floating_ips"
MAX_FLOATING_IPS = 65536  # ApplianceConfig.floating_ips' max_length
# Where the floating IPs go in `config_hash`'s canonical text: the key is
# written once, at the top level (a string holding these characters would
# have its quotes escaped).
_HASH_SLOT = '"floating_ips":[]'


@dataclass(frozen=True)
class Raw:
    """A body byte for byte, with where its floating IPs' array is: the
    offsets of its `[` and its `]`. Only for a body the schema took, whose
    strings hold no brace, bracket or unescaped quote: its entries are the
    flat objects between those offsets."""

    data: bytes = field(repr=False)
    open: int
    close: int


@dataclass(frozen=True)
class Body:
    """A PUT body read as plain JSON, or by its difference from the body in
    force (`rest` is then None: the other fields are that body's, byte for
    byte)."""

    rest: dict[str, Any] | None  # every field but the floating IPs, as sent
    entries: list[Any]  # the floating IPs, as sent
    raw: Raw | None = None


@dataclass(frozen=True)
class Floating:
    """Floating IPs in order, each in every form the delta needs."""

    entries: list[Any]  # as a body holds them: {"floating_ip": …, "fixed_ip": …}
    pairs: tuple[FloatingPair, ...]
    objects: tuple[FloatingIp, ...]
    hashed: tuple[str, ...]  # as `config_hash`'s canonical text writes them
    dnat: tuple[str, ...]  # the elements of the ruleset's maps
    snat: tuple[str, ...]

    @staticmethod
    def of(pairs: Sequence[FloatingPair], objects: Sequence[FloatingIp]) -> Floating:
        return Floating(
            [{"floating_ip": f, "fixed_ip": x} for f, x in pairs],
            tuple(pairs),
            tuple(objects),
            tuple(f'{{"fixed_ip":"{x}","floating_ip":"{f}"}}' for f, x in pairs),
            tuple(f"{f} : {x}" for f, x in pairs),
            tuple(f"{x} : {f}" for f, x in pairs),
        )

    def spliced(self, start: int, end: int, window: Floating) -> Floating:
        """These with [start, end) replaced by `window`."""
        return Floating(
            self.entries[:start] + window.entries + self.entries[end:],
            self.pairs[:start] + window.pairs + self.pairs[end:],
            self.objects[:start] + window.objects + self.objects[end:],
            self.hashed[:start] + window.hashed + self.hashed[end:],
            self.dnat[:start] + window.dnat + self.dnat[end:],
            self.snat[:start] + window.snat + self.snat[end:],
        )


@dataclass(frozen=True)
class Known:
    """The config in force, held the way `plan_change` compares bodies."""

    config: ApplianceConfig
    digest: str  # its config hash
    rest: dict[str, Any] = field(repr=False)  # its dump without the floating IPs
    hash_text: tuple[str, str] = field(repr=False)  # canonical text around the floating IPs
    floating: Floating = field(repr=False)
    fixed_of: Mapping[str, str] = field(repr=False)  # floating IP → fixed IP
    floating_of: Mapping[str, str] = field(repr=False)  # fixed IP → floating IP
    raw: Raw | None = None  # the body it was applied from, if a delta read it

    @staticmethod
    def of(config: ApplianceConfig, digest: str, body: bytes | None = None) -> Known:
        """`body`: the one `config` was parsed from (taken by the schema),
        so that the next body is read by its difference from it."""
        pairs = [(str(f.floating_ip), str(f.fixed_ip)) for f in config.floating_ips]
        rest = config.model_dump(mode="json", exclude={FLOATING_IPS})
        return Known(
            config,
            digest,
            rest,
            _hash_text(rest),
            Floating.of(pairs, config.floating_ips),
            dict(pairs),
            {fixed: floating for floating, fixed in pairs},
            None if body is None else _raw(body),
        )

    def from_body(self, body: bytes) -> Known:
        """The same config, known to have been parsed from `body` too."""
        return replace(self, raw=_raw(body))

    def with_change(self, change: Change) -> Known:
        fixed_of, floating_of = dict(self.fixed_of), dict(self.floating_of)
        for floating, fixed in change.removed:
            del fixed_of[floating]
            del floating_of[fixed]
        for floating, fixed in change.added:
            fixed_of[floating] = fixed
            floating_of[fixed] = floating
        return Known(
            change.config,
            change.digest,
            self.rest,
            self.hash_text,
            change.floating,
            fixed_of,
            floating_of,
            change.raw,
        )


@dataclass(frozen=True)
class Change:
    """A config that differs from the one in force only in floating IPs."""

    config: ApplianceConfig
    digest: str
    floating: Floating = field(repr=False)
    added: Mapping[FloatingPair, FloatingIp]
    removed: frozenset[FloatingPair]
    plan: DeltaPlan
    splice: Splice  # what replaced what in the list in force (the record's journal)
    raw: Raw | None = None


_ARRAY = re.compile(rb'"floating_ips"\s*:\s*\[')


def read_body(body: bytes, known: Known | None = None) -> Body | None:
    """The body's fields and floating IP entries; None if it is not an
    object, or its floating IPs not a list (for the full parse to judge).
    Given the body in force (`known.raw`), a body that differs from it only
    inside the floating IPs' array is read by that difference alone."""
    if known is not None and known.raw is not None:
        found = _read_difference(body, known.raw, known.floating.entries)
        if found is not None:
            return found
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if type(document) is not dict:
        return None
    entries = document.pop(FLOATING_IPS, [])
    if type(entries) is not list:
        return None
    return Body(document, entries, _raw(body))


def _raw(body: bytes) -> Raw | None:
    """Where the floating IPs' array is (see `Raw`: trusted only once the
    body is known good)."""
    found = _ARRAY.search(body)
    if found is None or _ARRAY.search(body, found.end()) is not None:
        return None
    close = body.find(b"]", found.end())
    return Raw(body, found.end() - 1, close) if close >= 0 else None


def _read_difference(body: bytes, raw: Raw, entries: list[Any]) -> Body | None:
    """The body as the one in force (`raw`, whose entries are `entries`)
    with the entries between the first and the last byte that differ
    replaced by what the new body holds there, parsed alone; None if the
    difference is not inside the floating IPs' array, or not whole entries."""
    old = raw.data
    start = _common_prefix(old, body)
    shortest = min(len(old), len(body))
    tail = _common_prefix(old[::-1][: shortest - start], body[::-1][: shortest - start])
    if start <= raw.open or len(old) - tail > raw.close:
        return None
    # Widen to whole entries of the old body (entries are flat objects).
    first = old.rfind(b"{", raw.open, start)
    begin = raw.open + 1 if first < 0 else first
    last = old.find(b"}", len(old) - tail, raw.close)
    end = raw.close if last < 0 else last + 1
    before = old.count(b"{", raw.open, begin)  # entries kept in front
    replaced = old.count(b"{", begin, end)
    if before + replaced > len(entries):
        return None
    try:
        window = json.loads(b"[" + body[begin : len(body) - (len(old) - end)] + b"]")
    except ValueError:
        return None
    after = len(entries) - before - replaced
    if not window and (before or after):
        return None  # a separator would be left dangling: not JSON
    spliced = entries[:before] + window + entries[before + replaced :]
    return Body(None, spliced, Raw(body, raw.open, raw.close + len(body) - len(old)))


def _common_prefix(a: bytes, b: bytes) -> int:
    """How many bytes `a` and `b` start with alike (compared in blocks)."""
    shortest = min(len(a), len(b))
    count, step = 0, 4096
    while step:
        while count + step <= shortest and a[count : count + step] == b[count : count + step]:
            count += step
        step //= 8
    while count < shortest and a[count] == b[count]:
        count += 1
    return count


def plan_change(
    known: Known,
    body: Body,
    *,
    known_networks: set[str],
    network_mtus: dict[str, int],
) -> Change | None:
    """The change if `body` is the config in force with other floating IPs
    (or the same ones in another order), else None (apply in full)."""
    config = known.config
    external = config.external_interface()
    if external is None or len(body.entries) > MAX_FLOATING_IPS:
        return None
    if body.rest is not None and not _same_rest(known, body.rest):
        return None
    # Only the window between what both lists start and end with alike
    # changed: outside it are the entries in force (valid, each once), and
    # they cost no more than comparing them.
    old, new = known.floating.entries, body.entries
    start = _common_start(old, new)
    tail = _common_start(old[start:][::-1], new[start:][::-1])
    old_end, new_end = len(old) - tail, len(new) - tail
    old_window = set(known.floating.pairs[start:old_end])
    window_pairs = []
    for entry in new[start:new_end]:
        pair = _pair(entry)
        if pair is None:
            return None
        window_pairs.append(pair)
    wanted = set(window_pairs)
    if len(wanted) != len(window_pairs):
        return None  # a pair twice: the full validation words the error
    removed = frozenset(old_window - wanted)
    added: dict[FloatingPair, FloatingIp] = {}
    for pair in sorted(wanted - old_window):
        floating, fixed = pair
        # Unique among all: not in force unless on its way out.
        if floating in known.fixed_of and (floating, known.fixed_of[floating]) not in removed:
            return None
        if fixed in known.floating_of and (known.floating_of[fixed], fixed) not in removed:
            return None
        entry = _floating_ip(pair)
        if entry is None:
            return None
        added[pair] = entry
    if len({f for f, _ in added}) != len(added) or len({x for _, x in added}) != len(added):
        return None
    if added:
        # The in-force config passed every check; with only the new floating
        # IPs, the same checks judge them (uniqueness is checked above).
        trial = config.model_copy(update={FLOATING_IPS: list(added.values())})
        if validate_semantics(trial, known_networks=known_networks, network_mtus=network_mtus):
            return None
    kept = dict(
        zip(known.floating.pairs[start:old_end], known.floating.objects[start:old_end], strict=True)
    )
    window = Floating.of(window_pairs, [added.get(p) or kept[p] for p in window_pairs])
    now = known.floating.spliced(start, old_end, window)
    new_config = config.model_copy(update={FLOATING_IPS: list(now.objects)})
    head, rest_tail = known.hash_text
    canonical = head + ",".join(now.hashed) + rest_tail
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    plan = _plan(new_config, now, sorted(added), sorted(removed))
    splice = Splice(start, old_end, tuple(window_pairs))
    return Change(new_config, digest, now, added, removed, plan, splice, body.raw)


def _plan(
    config: ApplianceConfig,
    floating: Floating,
    added: Sequence[FloatingPair],
    removed: Sequence[FloatingPair],
) -> DeltaPlan:
    """Elements, then routes (as `plan_apply` orders the ruleset before the
    links and routes), then conntrack of what is gone, then announcements."""
    if not added and not removed:
        return ()
    external = config.external_interface()
    assert external is not None
    device = appliance_interface(external.role.value, external.mac)
    ruleset = render_nftables(config, (floating.dnat, floating.snat))
    where = f"{TABLE_FAMILY} {TABLE_NAME}"
    commands = []
    # Deletions first: a floating IP that moves is deleted and added again.
    if removed:
        dnat = ", ".join(f"{floating} : {fixed}" for floating, fixed in removed)
        snat = ", ".join(f"{fixed} : {floating}" for floating, fixed in removed)
        commands.append(f"delete element {where} floating_dnat {{ {dnat} }}")
        commands.append(f"delete element {where} floating_snat {{ {snat} }}")
    if added:
        dnat = ", ".join(f"{floating} : {fixed}" for floating, fixed in added)
        snat = ", ".join(f"{fixed} : {floating}" for floating, fixed in added)
        commands.append(f"add element {where} floating_dnat {{ {dnat} }}")
        commands.append(f"add element {where} floating_snat {{ {snat} }}")
    # A floating IP that moved to another fixed IP keeps its local route.
    gone = sorted({floating for floating, _ in removed})
    new = sorted({floating for floating, _ in added})
    actions: list[DeltaAction] = [
        ChangeFloatingElements("\n".join(commands) + "\n", ruleset_digest(ruleset.text())),
        ChangeFloatingRoutes(
            device,
            added=tuple(f for f in new if f not in gone),
            removed=tuple(f for f in gone if f not in new),
        ),
    ]
    if gone:
        actions.append(ForgetConntrack(tuple(ipaddress.IPv4Address(f) for f in gone)))
    if added:
        announced = sorted({ipaddress.IPv4Address(floating) for floating, _ in added})
        actions.append(Announce(device, external.mac, tuple(announced)))
    return tuple(actions)


def _common_start(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many entries `a` and `b` start with alike (compared a slice at
    a time: 10,000 entries one by one cost milliseconds in Python)."""
    if a == b:
        return len(a)
    count, shortest, step = 0, min(len(a), len(b)), 256
    while count < shortest and a[count : count + step] == b[count : count + step]:
        count += step
    count = min(count, shortest)
    while count < shortest and a[count] == b[count]:
        count += 1
    return count


def _hash_text(rest: dict[str, Any]) -> tuple[str, str]:
    """`config_hash`'s canonical text before and after the floating IPs."""
    canonical = json.dumps({**rest, FLOATING_IPS: []}, sort_keys=True, separators=(",", ":"))
    head, _, tail = canonical.partition(_HASH_SLOT)
    return head + '"floating_ips":[', "]" + tail


def _pair(entry: Any) -> FloatingPair | None:
    """An entry as a text pair, if it has the schema's shape: an object of
    exactly two strings."""
    if type(entry) is not dict or len(entry) != 2:
        return None
    floating, fixed = entry.get("floating_ip"), entry.get("fixed_ip")
    if type(floating) is not str or type(fixed) is not str:
        return None
    return floating, fixed


def _same_rest(known: Known, rest: dict[str, Any]) -> bool:
    """Whether the body's other fields make the config in force: as sent
    (an orchestrator sends the dump), else as the schema reads them (a few
    small fields: cheap to parse)."""
    if rest == known.rest:
        return True
    try:
        parsed = ApplianceConfig.model_validate({**rest, FLOATING_IPS: []})
    except ValidationError:
        return False
    return parsed.model_dump(mode="json", exclude={FLOATING_IPS}) == known.rest


def _floating_ip(pair: FloatingPair) -> FloatingIp | None:
    """The entry if the schema takes it and writes it back the same (the
    text pairs stand for the addresses only when they are canonical)."""
    floating, fixed = pair
    try:
        entry = FloatingIp.model_validate({"floating_ip": floating, "fixed_ip": fixed})
    except ValidationError:
        return None
    if (str(entry.floating_ip), str(entry.fixed_ip)) != pair:
        return None
    return entry
