"""Networks' L2 segments: Neutron's provider extension.

A tenant network is VXLAN with a VNI allocated from the deployment's range
(`ApiSettings`); an admin may instead name a VNI, or make a `flat` network
on a physnet (how an external network reaches the outside). A VNI, and a
flat physnet, belongs to one network at a time: the database's unique
constraints `uq_networks_segment` / `uq_networks_physnet` hold that under
concurrency; a request that loses the race runs again (`api.http.races`)
and then sees the value taken.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.api.errors import NeutronError
from astara.api.settings import MAX_VNI, MIN_VNI, ApiSettings
from astara.db.models import Network

NETWORK_TYPE = "provider:network_type"
PHYSICAL_NETWORK = "provider:physical_network"
SEGMENTATION_ID = "provider:segmentation_id"
PROVIDER_ATTRIBUTES = (NETWORK_TYPE, PHYSICAL_NETWORK, SEGMENTATION_ID)

VXLAN, FLAT = "vxlan", "flat"
PHYSNET_MAX = 64  # the column's length
CANDIDATES = 64  # VNIs drawn at random and checked in one query, so that racers rarely collide
_random = random.SystemRandom()


def invalid(reason: str) -> NeutronError:
    """Neutron's plugin-level InvalidInput (not tied to one attribute)."""
    return NeutronError(400, "InvalidInput", f"Invalid input for operation: {reason}.")


@dataclass(frozen=True)
class Segment:
    """What a network's provider attributes ask for; `segmentation_id` None
    on a VXLAN segment: allocate one."""

    network_type: str
    physical_network: str | None = None
    segmentation_id: int | None = None


def requested(values: dict[str, Any]) -> Segment:
    """The segment a create's provider attributes ask for (a tenant VXLAN
    network when none is given), or Neutron's 400."""
    network_type = values.get(NETWORK_TYPE)
    physnet = values.get(PHYSICAL_NETWORK)
    vni = values.get(SEGMENTATION_ID)
    if network_type is None:
        if physnet is not None or vni is not None:
            raise invalid("network_type required")
        return Segment(VXLAN)
    if network_type == VXLAN:
        if physnet is not None:
            raise invalid(f"{PHYSICAL_NETWORK} specified for vxlan network")
        if vni is not None and not MIN_VNI <= vni <= MAX_VNI:
            raise invalid(
                f"{vni} is not a valid VXLAN VNI, it must be between {MIN_VNI} and {MAX_VNI}"
            )
        return Segment(VXLAN, segmentation_id=vni)
    if network_type == FLAT:
        if vni is not None:
            raise invalid(f"{SEGMENTATION_ID} prohibited for flat provider network")
        if not physnet:
            raise invalid("physical_network required for flat provider network")
        if len(physnet) > PHYSNET_MAX:
            raise invalid(f"physical_network '{physnet}' is longer than {PHYSNET_MAX} characters")
        return Segment(FLAT, physical_network=physnet)
    if network_type == "vlan":
        raise invalid(
            "network_type value 'vlan' not supported: Astara's hosts have no 802.1Q VLAN"
            " devices; use 'flat' on a physical_network, or 'vxlan'"
        )
    raise invalid(f"network_type value '{network_type}' not supported")


def reserve(session: Session, wanted: Segment, settings: ApiSettings) -> Segment:
    """`wanted` with its VNI allocated, after checking that no other network
    has its VNI or flat physnet (409, as Neutron's ML2 answers)."""
    if wanted.network_type == FLAT:
        taken = session.scalar(
            select(Network.id).where(
                Network.network_type == FLAT, Network.physical_network == wanted.physical_network
            )
        )
        if taken is not None:
            raise NeutronError(
                409,
                "FlatNetworkInUse",
                "Unable to create the flat network. Physical network"
                f" {wanted.physical_network} is in use.",
            )
        return wanted
    if wanted.segmentation_id is not None:
        taken = session.scalar(
            select(Network.id).where(
                Network.network_type == VXLAN, Network.segmentation_id == wanted.segmentation_id
            )
        )
        if taken is not None:
            raise NeutronError(
                409,
                "TunnelIdInUse",
                f"Unable to create the network. The tunnel ID {wanted.segmentation_id} is in use.",
            )
        return wanted
    return Segment(VXLAN, segmentation_id=allocate_vni(session, settings))


def allocate_vni(session: Session, settings: ApiSettings) -> int:
    """A VNI of the range no network has: a few drawn at random and checked
    in one query (cheap however many networks exist), and for a nearly full
    range, random among the first free ones of an exact scan. A concurrent
    request drawing the same loses on `uq_networks_segment` and runs again.
    A full range is Neutron's 503 NoNetworkAvailable."""
    size = settings.vni_max - settings.vni_min + 1
    probes = (
        range(settings.vni_min, settings.vni_max + 1)
        if size <= CANDIDATES
        else {settings.vni_min + _random.randrange(size) for _ in range(CANDIDATES)}
    )
    taken = set(
        session.scalars(
            select(Network.segmentation_id).where(
                Network.network_type == VXLAN, Network.segmentation_id.in_(list(probes))
            )
        )
    )
    free = [vni for vni in probes if vni not in taken]
    if not free and size > CANDIDATES:
        free = _first_free(session, settings)
    if not free:
        raise NeutronError(
            503,
            "NoNetworkAvailable",
            "Unable to create the network. No tenant network is available for allocation.",
        )
    return _random.choice(free)


def _first_free(session: Session, settings: ApiSettings) -> list[int]:
    used = set(
        session.scalars(
            select(Network.segmentation_id).where(
                Network.network_type == VXLAN,
                Network.segmentation_id >= settings.vni_min,
                Network.segmentation_id <= settings.vni_max,
            )
        )
    )
    free: list[int] = []
    for vni in range(settings.vni_min, settings.vni_max + 1):
        if vni not in used:
            free.append(vni)
            if len(free) == CANDIDATES:
                break
    return free


def apply(network: Network, segment: Segment) -> None:
    network.network_type = segment.network_type
    network.physical_network = segment.physical_network
    network.segmentation_id = segment.segmentation_id


def provider_view(network: Network) -> dict[str, Any]:
    return {
        NETWORK_TYPE: network.network_type,
        PHYSICAL_NETWORK: network.physical_network,
        SEGMENTATION_ID: network.segmentation_id,
    }


def ensure_segments(session: Session, settings: ApiSettings) -> list[str]:
    """Give every VXLAN network without a VNI (made before networks had
    segments) one from the range, and an MTU the encapsulation leaves room
    for; the ids of those given one. Idempotent: `astara serve` calls it at
    every start, before the orchestrator reads any network."""
    missing = session.scalars(
        select(Network)
        .where(Network.network_type == VXLAN, Network.segmentation_id.is_(None))
        .order_by(Network.created_at, Network.id)
    ).all()
    for network in missing:
        network.segmentation_id = allocate_vni(session, settings)
        network.mtu = min(network.mtu, settings.max_mtu(VXLAN))
        session.flush()  # the next allocation sees this one
    return [n.id for n in missing]
