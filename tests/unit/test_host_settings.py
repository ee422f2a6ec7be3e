from astara.orchestrator.hosts import _settings
from astara.orchestrator.placement import HostInfo

JOINED = HostInfo(
    name="h2",
    address="https://192.0.2.12:9698",
    underlay_address="192.0.2.12",
    physnets={"public": "eth1"},
    availability_zone="az1",
)


def test_a_host_s_row_follows_what_its_agent_reports_now() -> None:
    same = {"underlay_address": "192.0.2.12", "physnets": {"public": "eth1"}}
    assert _settings({**same, "availability_zone": "az1"}, JOINED) == {}
    restarted = {
        "underlay_address": "192.0.2.22",
        "physnets": {"public": "eth2"},
        "availability_zone": "az2",
    }
    assert _settings(restarted, JOINED) == restarted
    # An agent that says nothing of a setting leaves it as joined.
    assert _settings({"status": "ok"}, JOINED) == {}
