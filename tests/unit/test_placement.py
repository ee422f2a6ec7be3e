from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from astara.orchestrator.placement import HostInfo, choose


def host(name: str, **fields: object) -> HostInfo:
    return HostInfo(name=name, address=f"https://{name}:9697", **fields)  # type: ignore[arg-type]


def test_fewest_appliances_first_then_by_name() -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    assert choose(hosts, {"h1": 2, "h2": 1, "h3": 1}) == hosts[1]
    assert choose(hosts, {}) == hosts[0]


def test_down_and_drained_hosts_take_nothing() -> None:
    hosts = [host("h1", alive=False), host("h2", drained=True), host("h3")]
    assert choose(hosts, {"h3": 100}) == hosts[2]
    assert choose(hosts[:2], {}) is None


def test_hints_physnets_and_exclusions_narrow_the_choice() -> None:
    hosts = [
        host("h1", availability_zone="az1"),
        host("h2", availability_zone="az2", physnets={"public": "eth1"}),
        host("h3", availability_zone="az2"),
    ]
    assert choose(hosts, {}, hints=["az2"]) == hosts[1]
    assert choose(hosts, {"h2": 5}, hints=["az2"]) == hosts[2]
    assert choose(hosts, {}, physnets=["public"]) == hosts[1]
    assert choose(hosts, {}, physnets=["public"], exclude=["h2"]) is None
    assert choose(hosts, {}, hints=["az3"]) is None


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 5)), max_size=8))
def test_the_chosen_host_is_schedulable_and_least_loaded(
    specs: list[tuple[bool, bool, int]],
) -> None:
    hosts = [
        host(f"h{i}", alive=alive, drained=drained) for i, (alive, drained, _) in enumerate(specs)
    ]
    load = {f"h{i}": count for i, (_, _, count) in enumerate(specs)}
    chosen = choose(hosts, load)
    up = [h for h in hosts if h.schedulable]
    if not up:
        assert chosen is None
    else:
        assert chosen is not None and chosen.schedulable
        assert load[chosen.name] == min(load[h.name] for h in up)


def test_once_hosts_have_an_underlay_a_host_without_one_takes_nothing() -> None:
    local = host("local")
    joined = host("h2", underlay_address="192.0.2.12")
    assert choose([local, joined], {"h2": 9}) == joined
    assert choose([local], {}) == local, "the single-host default"
    assert choose([local, host("h3", underlay_address="192.0.2.13", alive=False)], {}) == local
    # Drained, the host with an underlay still carries the tenant networks.
    drained = host("h2", underlay_address="192.0.2.12", drained=True)
    assert choose([local, drained], {}) is None
