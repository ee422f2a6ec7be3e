"""Floating IPs changed alone, decided as a delta (pure).

A PUT whose config differs from the one in force only in its floating IPs
(the commonest change a router sees) need not cost what the whole config
costs: at 10,000 floating IPs, parsing the body into the schema, validating
and rendering it, `nft -c` of the whole table, listing the table and reading
every local route take about a second, while the kernel needs a few
milliseconds for one element and one route.

`read_body` reads a PUT body as plain JSON: everything but the floating IPs
(`rest`), and the floating IPs as (floating, fixed) text pairs. `Known`
holds the config in force the same way. `plan_change` decides, from these
alone, whether the body is the config in force with other floating IPs, and
if so returns the new config (the in-force one with the floating IPs
swapped, the unchanged ones reused as they are), its hash, and the plan:
elements deleted and added in one transaction, local routes removed and
added, conntrack forgotten for floating IPs gone or moved, gratuitous ARP
for the new ones. Only the added floating IPs are parsed and validated
(`validate_semantics` over the in-force config with just them), uniqueness
is checked over the text pairs, and the hash is spliced
(`schema.config_hash_of`). Anything it cannot vouch for cheaply (another
field changed, a spelling the schema would rewrite, a value it refuses)
returns None: the body goes through the full apply, which answers errors
as before. Whether the appliance still stands as the last apply left it
(the genid, links, daemons) is the caller's cheap observation
(`plan.settled`), checked before.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from astara.appliance.actions import (
    Announce,
    ChangeFloatingElements,
    ChangeFloatingRoutes,
    DeltaAction,
    DeltaPlan,
    ForgetConntrack,
)
from astara.appliance.render.nftables import TABLE_FAMILY, TABLE_NAME, render_nftables
from astara.appliance.schema import (
    ApplianceConfig,
    FloatingIp,
    FloatingPair,
    config_hash_of,
    validate_semantics,
)
from astara.naming import appliance_interface

FLOATING_IPS = "floating_ips"
MAX_FLOATING_IPS = 65536  # ApplianceConfig.floating_ips' max_length


@dataclass(frozen=True)
class Body:
    """A PUT body read as plain JSON."""

    rest: dict[str, Any]  # every field but the floating IPs, as sent
    pairs: tuple[FloatingPair, ...]  # the floating IPs, in order, as sent


@dataclass(frozen=True)
class Known:
    """The config in force, held the way `plan_change` compares bodies."""

    config: ApplianceConfig
    digest: str  # its config hash
    rest: dict[str, Any] = field(repr=False)  # its dump without the floating IPs
    pairs: tuple[FloatingPair, ...] = field(repr=False)  # in order
    entries: Mapping[FloatingPair, FloatingIp] = field(repr=False)
    fixed_of: Mapping[str, str] = field(repr=False)  # floating IP → fixed IP
    floating_of: Mapping[str, str] = field(repr=False)  # fixed IP → floating IP

    @staticmethod
    def of(config: ApplianceConfig, digest: str) -> Known:
        entries = {(str(f.floating_ip), str(f.fixed_ip)): f for f in config.floating_ips}
        pairs = tuple(entries)
        return Known(
            config,
            digest,
            _rest_of(config),
            pairs,
            entries,
            dict(pairs),
            {fixed: floating for floating, fixed in pairs},
        )

    def with_change(self, change: Change) -> Known:
        entries = dict(self.entries)
        fixed_of, floating_of = dict(self.fixed_of), dict(self.floating_of)
        for pair in change.removed:
            del entries[pair]
            del fixed_of[pair[0]]
            del floating_of[pair[1]]
        entries.update(change.added)
        for floating, fixed in change.added:
            fixed_of[floating] = fixed
            floating_of[fixed] = floating
        return Known(
            change.config, change.digest, self.rest, change.pairs, entries, fixed_of, floating_of
        )


@dataclass(frozen=True)
class Change:
    """A config that differs from the one in force only in floating IPs."""

    config: ApplianceConfig
    digest: str
    pairs: tuple[FloatingPair, ...] = field(repr=False)
    added: Mapping[FloatingPair, FloatingIp]
    removed: frozenset[FloatingPair]
    plan: DeltaPlan


def read_body(body: bytes) -> Body | None:
    """The body's fields and floating IP pairs; None if it is not an object
    whose floating IPs are objects of exactly two strings (the schema's
    shape: anything else is for the full parse to judge)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if type(document) is not dict:
        return None
    entries = document.pop(FLOATING_IPS, [])
    if type(entries) is not list:
        return None
    pairs = []
    for entry in entries:
        if type(entry) is not dict or len(entry) != 2:
            return None
        floating, fixed = entry.get("floating_ip"), entry.get("fixed_ip")
        if type(floating) is not str or type(fixed) is not str:
            return None
        pairs.append((floating, fixed))
    return Body(document, tuple(pairs))


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
    if external is None or len(body.pairs) > MAX_FLOATING_IPS:
        return None
    if not _same_rest(known, body.rest):
        return None
    # Only the window between what both lists start and end with changed:
    # the rest is the same pairs, each once (the config in force has no
    # duplicates), and costs no more than comparing it.
    old, new = known.pairs, body.pairs
    start = _common_start(old, new)
    end = _common_start(old[start:][::-1], new[start:][::-1])
    old_window, new_window = set(old[start : len(old) - end]), new[start : len(new) - end]
    wanted = set(new_window)
    if len(wanted) != len(new_window):
        return None  # a pair twice: the full validation words the error
    removed = frozenset(old_window - wanted)
    added: dict[FloatingPair, FloatingIp] = {}
    for pair in sorted(wanted - old_window):
        floating, fixed = pair
        # Unique among all: not in force unless on its way out (the full
        # validation words any error).
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
    entries = {**known.entries, **added}
    new_config = config.model_copy(update={FLOATING_IPS: [entries[p] for p in body.pairs]})
    digest = config_hash_of(known.rest, body.pairs)
    plan = _plan(new_config, body.pairs, sorted(added), sorted(removed))
    return Change(new_config, digest, body.pairs, added, removed, plan)


def _plan(
    config: ApplianceConfig,
    pairs: Sequence[FloatingPair],
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
    ruleset = render_nftables(config, pairs)
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
        ChangeFloatingElements("\n".join(commands) + "\n", ruleset.text()),
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


def _common_start(a: Sequence[FloatingPair], b: Sequence[FloatingPair]) -> int:
    """How many pairs `a` and `b` start with alike."""
    if a == b:
        return len(a)
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _rest_of(config: ApplianceConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude={FLOATING_IPS})


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
    return _rest_of(parsed) == known.rest


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
