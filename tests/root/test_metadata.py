"""The metadata service with real packets: a workload's
`curl http://169.254.169.254/latest/meta-data/…` reaches its router (or, on a
network no router joins, its DHCP appliance, by the route DHCP gives it),
whose haproxy hands it to the host's agent, which asks a stand-in for Nova's
metadata API with Neutron's headers and the signature a real Nova checks.
The backend answers for the right instance and project; an address no
instance has gets 404 without the backend hearing of it; headers a workload
forges change nothing; the secret is in no config, rendered text or log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astara.linux import cleanup
from astara.testing.agent import unique_prefix
from astara.testing.metadata import Instance, MetadataBackend
from astara.testing.net import sh, wait_until
from astara.testing.server import Cloud, Server
from tests.root.test_dhcp_appliance import plug_with_dhcp

pytestmark = pytest.mark.root

SECRET = "metadata-shared-s3cret"
URL = "http://169.254.169.254/latest/meta-data/"


def curl(namespace: str, path: str = "", *headers: str) -> tuple[int, str]:
    """The status and body a workload gets for `URL + path`."""
    argv = ["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"]
    for header in headers:
        argv += ["-H", header]
    out = sh(namespace, [*argv, URL + path], check=False)
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


@pytest.fixture
def metadata_cloud(tmp_path: Path) -> Iterator[tuple[Cloud, MetadataBackend]]:
    """`astara serve` whose local agent serves metadata from a backend on loopback."""
    secret = tmp_path / "metadata-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    prefix = unique_prefix("md")
    with MetadataBackend(SECRET.encode(), {}) as backend:
        server = Server(
            tmp_path / "var",
            prefix,
            "--resync-s",
            "2",
            "--metadata-url",
            backend.url,
            "--metadata-secret-file",
            str(secret),
        )
        try:
            server.start()
            yield Cloud(server), backend
        finally:
            server.stop()
            cleanup.remove_all(prefix)
            assert not any(cleanup.leftovers(prefix).values())


def instance(cloud: Cloud, network_id: str, name: str, device_id: str = "") -> dict[str, Any]:
    fields: dict[str, Any] = {"network_id": network_id, "name": name}
    if device_id:
        fields |= {"device_id": device_id, "device_owner": "compute:nova"}
    port: dict[str, Any] = cloud.create("ports", "port", **fields)
    return port


def test_workloads_get_their_own_metadata_through_their_router_or_dhcp_appliance(
    metadata_cloud: tuple[Cloud, MetadataBackend], tmp_path: Path
) -> None:
    cloud, backend = metadata_cloud
    prefix = cloud.server.prefix
    project = cloud("GET", "/v2.0/quotas/project")["project"]["project_id"]
    backend.instances.update({"vm-1": Instance(project, "vm1"), "vm-2": Instance(project, "vm2")})

    # Behind a router.
    web = cloud.create("networks", "network", name="web")
    subnet = cloud.create(
        "subnets",
        "subnet",
        network_id=web["id"],
        cidr="10.70.0.0/24",
        ip_version=4,
        enable_dhcp=False,
    )
    router = cloud.create("routers", "router", name="r")
    cloud("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})
    vm1 = instance(cloud, web["id"], "vm1", "vm-1")
    anonymous = instance(cloud, web["id"], "anon")
    cloud.plug(vm1["id"], f"{prefix}-vm1")
    cloud.plug(anonymous["id"], f"{prefix}-anon")
    cloud.wait_active(router["id"])
    vm1_ns, vm1_ip = f"{prefix}-vm1", vm1["fixed_ips"][0]["ip_address"]

    wait_until(lambda: curl(vm1_ns, "instance-id") == (200, "vm-1"), 30, 0.2, "vm1's metadata")
    told = backend.seen[-1]
    assert (told["x-instance-id"], told["x-tenant-id"]) == ("vm-1", project)
    assert told["x-forwarded-for"] == vm1_ip
    assert curl(vm1_ns, "local-ipv4") == (200, vm1_ip)
    assert curl(vm1_ns)[1].split() == ["instance-id", "hostname", "local-ipv4"]
    # Headers a workload forges are dropped: it is still itself.
    forged = curl(
        vm1_ns,
        "instance-id",
        "X-Instance-ID: vm-2",
        "X-Forwarded-For: 10.70.0.99",
        "X-Tenant-ID: someone-else",
        "X-Astara-Appliance-ID: another",
    )
    assert forged == (200, "vm-1")
    assert backend.seen[-1]["x-instance-id"] == "vm-1"
    # A port with no instance: 404, and the backend never hears of it.
    asked = len(backend.seen)
    assert curl(f"{prefix}-anon", "instance-id")[0] == 404
    assert len(backend.seen) == asked

    # On a network no router joins: through its DHCP appliance, by the route
    # its DHCP hands out.
    isolated = cloud.create("networks", "network", name="isolated")
    cloud.create("subnets", "subnet", network_id=isolated["id"], cidr="10.71.0.0/24", ip_version=4)
    vm2 = instance(cloud, isolated["id"], "vm2", "vm-2")
    plug_with_dhcp(cloud, vm2, f"{prefix}-vm2")
    routes = sh(f"{prefix}-vm2", ["ip", "-4", "route"], check=False)
    assert "169.254.169.254 via 10.71.0." in routes, routes
    wait_until(
        lambda: curl(f"{prefix}-vm2", "instance-id") == (200, "vm-2"),
        30,
        0.2,
        "vm2's metadata through the DHCP appliance",
    )
    assert backend.seen[-1]["x-forwarded-for"] == vm2["fixed_ips"][0]["ip_address"]

    # The secret is the agent's alone: in no config, rendered text or log.
    state = cloud.server.state_dir
    for path in [*state.rglob("*"), *Path(f"/run/astara/{prefix}").rglob("*")]:
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    for appliance in cloud("GET", "/astara/v1/appliances")["appliances"]:
        shown = cloud("GET", f"/astara/v1/appliances/{appliance['id']}")
        assert SECRET not in str(shown)
