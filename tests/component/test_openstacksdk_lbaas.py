"""openstacksdk's load-balancer proxy, as tools (Terraform's provider,
Kubernetes' cloud provider, Ansible) use it, against `astara serve`: the
shapes it parses, the errors it raises, the fully populated create,
statistics, quotas and the cascade delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openstack
import pytest
from openstack import exceptions
from sqlalchemy import update

from astara.db.engine import make_engine, sqlite_url
from astara.db.models import LoadBalancer
from astara.testing.server import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "var")  # the API alone: no agent, nothing applied
    running.start()
    try:
        yield running
    finally:
        running.stop()


def activate(server: Server, balancer_id: str) -> None:
    """What the orchestrator does once the appliance runs it."""
    engine = make_engine(sqlite_url(server.state_dir.resolve()))
    with engine.begin() as connection:
        connection.execute(
            update(LoadBalancer)
            .where(LoadBalancer.id == balancer_id)
            .values(provisioning_status="ACTIVE")
        )
    engine.dispose()


def test_openstacksdk_drives_load_balancers(server: Server) -> None:
    token = (server.state_dir / "admin-token").read_text().strip()
    conn = openstack.connection.Connection(
        auth_type="admin_token", auth={"endpoint": server.url, "token": token}
    )
    network = conn.network.create_network(name="web")
    subnet = conn.network.create_subnet(network_id=network.id, cidr="10.0.0.0/24", ip_version=4)
    listeners = [
        {
            "name": "http",
            "protocol": "HTTP",
            "protocol_port": 80,
            "default_pool": {
                "name": "web",
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "healthmonitor": {"type": "HTTP", "delay": 2, "timeout": 1, "max_retries": 2},
                "members": [{"address": "10.0.0.10", "protocol_port": 8000}],
            },
        }
    ]
    made = conn.load_balancer.create_load_balancer(
        name="one-call", vip_subnet_id=subnet.id, listeners=listeners
    )
    assert made.provisioning_status == "PENDING_CREATE" and made.vip_address
    shown = conn.load_balancer.get_load_balancer(made.id)
    assert [listener["id"] for listener in shown.listeners] == [
        listener["id"] for listener in made.listeners
    ]
    [listener] = conn.load_balancer.listeners(loadbalancer_id=made.id)
    assert listener.protocol_port == 80 and listener.default_pool_id
    [pool] = conn.load_balancer.pools()
    assert pool.lb_algorithm == "ROUND_ROBIN" and pool.health_monitor_id
    [member] = conn.load_balancer.members(pool.id)
    assert (member.address, member.operating_status) == ("10.0.0.10", "OFFLINE")
    stats = conn.load_balancer.get_load_balancer_statistics(made.id)
    assert (stats.bytes_in, stats.total_connections) == (0, 0)

    # Octavia's faults, as the SDK raises them: a change while pending is a conflict.
    with pytest.raises(exceptions.ConflictException, match="is immutable"):
        conn.load_balancer.create_listener(
            loadbalancer_id=made.id, protocol="TCP", protocol_port=81
        )
    with pytest.raises(exceptions.BadRequestException, match="not allowed in this deployment"):
        conn.load_balancer.create_listener(
            loadbalancer_id=made.id, protocol="UDP", protocol_port=53
        )
    with pytest.raises(exceptions.NotFoundException):
        conn.load_balancer.get_load_balancer("0" * 8 + "-0000-0000-0000-" + "0" * 12)

    # Quotas, as the SDK reads and writes them.
    project_id = made.project_id
    assert conn.load_balancer.get_quota(project_id).load_balancers == 10
    conn.load_balancer.update_quota(project_id, load_balancers=3, members=50)
    quota = conn.load_balancer.get_quota(project_id)
    assert (quota.load_balancers, quota.members) == (3, 50)
    assert [q.project_id for q in conn.load_balancer.quotas()] == [project_id]
    conn.load_balancer.delete_quota(project_id)
    assert conn.load_balancer.get_quota(project_id).load_balancers == 10

    assert [p.name for p in conn.load_balancer.providers()] == ["astara"]
    assert list(conn.load_balancer.flavors()) == []

    # The cascade delete (refused while pending, as Octavia): gone at once,
    # with its children and its VIP port.
    with pytest.raises(exceptions.ConflictException, match="Invalid state PENDING_CREATE"):
        conn.load_balancer.delete_load_balancer(made.id, cascade=True)
    activate(server, made.id)
    conn.load_balancer.delete_load_balancer(made.id, cascade=True)
    assert conn.load_balancer.find_load_balancer(made.id) is None
    assert list(conn.load_balancer.pools()) == []
    assert conn.network.find_port(made.vip_port_id) is None
