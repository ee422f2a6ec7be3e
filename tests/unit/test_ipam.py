"""IPAM: Neutron's CIDR, gateway and pool rules, and allocation."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astara import ipam
from astara.ipam import IpamError, Pool

ip = ipaddress.ip_address
net = ipaddress.ip_network


def pool(start: str, end: str) -> Pool:
    return Pool(ip(start), ip(end))


@pytest.mark.parametrize(
    ("text", "version", "stored"),
    [
        ("10.0.0.0/24", 4, "10.0.0.0/24"),
        ("10.0.0.5/24", 4, "10.0.0.0/24"),
        ("2001:DB8:0:0::/64", 6, "2001:db8::/64"),
    ],
)
def test_cidr_is_stored_as_its_network(text: str, version: int, stored: str) -> None:
    assert str(ipam.parse_cidr(text, version)) == stored


@pytest.mark.parametrize(
    ("text", "version", "reason"),
    [
        ("10.0.0.0", 4, "is not a valid IP subnet"),
        ("10.0.0.0/33", 4, "is not a valid IP subnet"),
        ("010.0.0.0/24", 4, "is not a valid IP subnet"),
        ("10.0.0.0/24", 6, "does not match the ip_version"),
        ("0.0.0.0/0", 4, "0 is not allowed"),
    ],
)
def test_bad_cidrs_are_400(text: str, version: int, reason: str) -> None:
    with pytest.raises(IpamError, match=reason) as refused:
        ipam.parse_cidr(text, version)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("cidr", "gateway"),
    [
        ("10.0.0.0/24", "10.0.0.1"),
        ("192.168.1.0/30", "192.168.1.1"),
        ("2001:db8::/64", "2001:db8::"),
    ],
)
def test_default_gateway(cidr: str, gateway: str) -> None:
    assert ipam.default_gateway(net(cidr)) == ip(gateway)


@pytest.mark.parametrize(
    ("cidr", "gateway", "pools"),
    [
        ("10.0.0.0/24", "10.0.0.1", [("10.0.0.2", "10.0.0.254")]),
        ("10.0.0.0/24", "10.0.0.50", [("10.0.0.1", "10.0.0.49"), ("10.0.0.51", "10.0.0.254")]),
        ("10.0.0.0/24", "10.0.0.254", [("10.0.0.1", "10.0.0.253")]),
        ("10.0.0.0/24", None, [("10.0.0.1", "10.0.0.254")]),
        ("10.0.0.0/24", "192.0.2.1", [("10.0.0.1", "10.0.0.254")]),  # outside: allowed
        ("10.0.0.0/31", None, [("10.0.0.0", "10.0.0.1")]),
        ("2001:db8::/64", "2001:db8::", [("2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff")]),
    ],
)
def test_default_pools_split_around_the_gateway(
    cidr: str, gateway: str | None, pools: list[tuple[str, str]]
) -> None:
    found = ipam.default_pools(net(cidr), ip(gateway) if gateway else None)
    assert found == [pool(*p) for p in pools]


def test_gateway_on_the_network_or_broadcast_address_is_refused() -> None:
    for gateway in ("10.0.0.0", "10.0.0.255"):
        with pytest.raises(IpamError, match="Gateway is not valid on subnet"):
            ipam.validate_gateway(net("10.0.0.0/24"), ip(gateway))
    ipam.validate_gateway(net("10.0.0.0/24"), ip("192.0.2.1"))  # outside the CIDR is accepted


@pytest.mark.parametrize(
    ("pools", "gateway", "kind", "status"),
    [
        ([("10.0.0.0", "10.0.0.9")], None, "OutOfBoundsAllocationPool", 400),
        ([("10.0.0.250", "10.0.0.255")], None, "OutOfBoundsAllocationPool", 400),
        (
            [("10.0.0.2", "10.0.0.9"), ("10.0.0.9", "10.0.0.20")],
            None,
            "OverlappingAllocationPools",
            409,
        ),
        ([("10.0.0.1", "10.0.0.9")], "10.0.0.5", "GatewayConflictWithAllocationPools", 409),
    ],
)
def test_pool_rules(
    pools: list[tuple[str, str]], gateway: str | None, kind: str, status: int
) -> None:
    with pytest.raises(IpamError) as refused:
        ipam.validate_pools(
            net("10.0.0.0/24"), [pool(*p) for p in pools], ip(gateway) if gateway else None
        )
    assert (refused.value.kind, refused.value.status) == (kind, status)


def test_pools_of_the_wrong_version_or_backwards_are_invalid() -> None:
    for bad in (
        {"start": "2001:db8::1", "end": "2001:db8::9"},
        {"start": "10.0.0.9", "end": "10.0.0.1"},
        {"start": "x"},
    ):
        with pytest.raises(IpamError) as refused:
            ipam.parse_pools(net("10.0.0.0/24"), [bad])
        assert refused.value.kind == "InvalidAllocationPool"


def test_exhausted_pools_give_none() -> None:
    pools = [pool("10.0.0.2", "10.0.0.3")]
    used = {ip("10.0.0.2"), ip("10.0.0.3")}
    assert ipam.choose_address(pools, used, random.Random(1)) is None


@given(
    st.lists(st.integers(min_value=0, max_value=60), max_size=60),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_chosen_address_is_free_and_in_a_pool(used_offsets: list[int], seed: int) -> None:
    pools = [pool("10.0.0.2", "10.0.0.30"), pool("10.0.0.40", "10.0.0.50")]
    used = {ip("10.0.0.0") + offset for offset in used_offsets}
    chosen = ipam.choose_address(pools, used, random.Random(seed))
    free = [
        a
        for p in pools
        for a in range(int(p.start), int(p.end) + 1)
        if ipaddress.IPv4Address(a) not in used
    ]
    if not free:
        assert chosen is None
    else:
        assert chosen is not None and chosen not in used and any(chosen in p for p in pools)


def test_free_addresses_stop_at_the_limit_on_huge_pools() -> None:
    pools = ipam.default_pools(net("2001:db8::/64"), ip("2001:db8::"))
    found = list(ipam.free_addresses(pools, {ip("2001:db8::1")}, limit=3))
    assert found == [ip("2001:db8::2"), ip("2001:db8::3"), ip("2001:db8::4")]


def test_eui64_matches_the_kernel_form() -> None:
    # fa:16:3e:00:04:10 → f816:3eff:fe00:410, as Linux forms it (see the root tests).
    assert (
        str(ipam.eui64(net("2001:db8:6::/64"), "fa:16:3e:00:04:10"))
        == "2001:db8:6:0:f816:3eff:fe00:410"
    )
    with pytest.raises(IpamError):
        ipam.eui64(net("2001:db8::/56"), "fa:16:3e:00:04:10")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_generated_macs_are_unicast_under_the_base(seed: int) -> None:
    mac = ipam.generate_mac(random.Random(seed))
    assert mac.startswith("fa:16:3e:") and len(mac) == 17
    assert int(mac[:2], 16) & 1 == 0


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=40))
def test_sampled_addresses_are_distinct_and_in_the_pools(seed: int, count: int) -> None:
    pools = [pool("10.0.0.2", "10.0.0.20"), pool("10.0.1.1", "10.0.1.5")]
    sampled = ipam.sample_addresses(pools, random.Random(seed), count)
    assert len(sampled) == len(set(sampled)) <= count
    assert all(any(a in p for p in pools) for a in sampled)
    if count >= 24:  # small pools: every address is a candidate
        assert len(sampled) == 24


def test_sampling_works_on_a_whole_ipv6_slash_64() -> None:
    pools = ipam.default_pools(net("2001:db8::/64"), ip("2001:db8::"))
    sampled = ipam.sample_addresses(pools, random.Random(7), 32)
    assert len(sampled) == 32 and all(a in pools[0] for a in sampled)
