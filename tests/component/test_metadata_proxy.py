"""The agent's metadata proxy against a stand-in for Nova's metadata API on
loopback: it tells the backend who asks (Neutron's headers, the signature a
real Nova checks), answers 404 for an address no instance has without asking
the backend, and keeps the secret to itself (a file only its owner reads, a
socket only root reaches)."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from astara.agent.metadata import MetadataProxy, SecretError, load_secret, sign
from astara.appliance.schema import MetadataHost
from astara.testing.metadata import Instance, MetadataBackend
from astara.testing.server import BIN

SECRET = b"s3cret"
HOST = MetadataHost(
    ip_address=ipaddress.IPv4Address("10.0.0.5"), instance_id="vm-1", project_id="p1"
)


def lookup(appliance_id: str, address: ipaddress.IPv4Address) -> MetadataHost | None:
    return HOST if (appliance_id, address) == ("r1", HOST.ip_address) else None


def asking(address: str, appliance: str = "r1", **headers: str) -> dict[str, str]:
    return {"X-Astara-Appliance-ID": appliance, "X-Forwarded-For": address, **headers}


def test_the_signature_is_what_nova_recomputes() -> None:
    # HMAC-SHA256 of the instance id, keyed with the shared secret, in hex.
    expected = "2b08fde115ef3d74adb36d6e466c9703dd2ba7ee0dd548a17587a7cb11b0da5e"
    assert sign(SECRET, "vm-1") == expected


def test_the_backend_is_told_who_asks_and_trusts_it(tmp_path: Path) -> None:
    instances = {"vm-1": Instance("p1", "vm1")}
    with MetadataBackend(SECRET, instances) as backend:
        proxy = MetadataProxy(backend.url, SECRET, tmp_path / "proxy.sock", lookup)
        with TestClient(proxy.app) as client:
            answer = client.get("/latest/meta-data/instance-id", headers=asking("10.0.0.5"))
            assert (answer.status_code, answer.text) == (200, "vm-1")
            told = backend.seen[-1]
            assert told["x-instance-id"] == "vm-1" and told["x-tenant-id"] == "p1"
            assert told["x-forwarded-for"] == "10.0.0.5"
            assert told["x-instance-id-signature"] == sign(SECRET, "vm-1")
            listing = client.get("/latest/meta-data/", headers=asking("10.0.0.5"))
            assert listing.text.split() == ["instance-id", "hostname", "local-ipv4"]

            # No instance at that address, or behind another appliance: 404,
            # and the backend is not asked.
            asked = len(backend.seen)
            for headers in (asking("10.0.0.6"), asking("10.0.0.5", "r2"), asking("nonsense")):
                assert client.get("/latest/meta-data/", headers=headers).status_code == 404
            assert len(backend.seen) == asked

        # Signed with another secret, the backend refuses: its 403 passes through.
        wrong = MetadataProxy(backend.url, b"other", tmp_path / "proxy.sock", lookup)
        with TestClient(wrong.app) as client:
            refused = client.get("/latest/meta-data/", headers=asking("10.0.0.5"))
            assert (refused.status_code, refused.text) == (
                403,
                "Invalid proxy request signature.\n",
            )
    # The backend gone: 502, not a hang or a 500.
    with TestClient(proxy.app) as client:
        assert client.get("/latest/meta-data/", headers=asking("10.0.0.5")).status_code == 502


def test_the_secret_is_read_only_from_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert load_secret(secret) == SECRET
    secret.chmod(0o640)
    with pytest.raises(SecretError, match="readable by its owner only"):
        load_secret(secret)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(SecretError, match="empty"):
        load_secret(empty)
    with pytest.raises(SecretError):
        load_secret(tmp_path / "missing")
    proxy = MetadataProxy("http://127.0.0.1:1", SECRET, tmp_path / "s.sock", lookup)
    assert "s3cret" not in repr(proxy)


@pytest.mark.root
def test_a_secret_of_another_user_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    os.chown(secret, 65534, 65534)  # another user's, however private
    with pytest.raises(SecretError, match="owned by the user the agent runs as"):
        load_secret(secret)


def test_the_proxy_listens_where_only_root_reaches(tmp_path: Path) -> None:
    socket_path = tmp_path / "metadata" / "proxy.sock"
    instances = {"vm-1": Instance("p1", "vm1")}
    with MetadataBackend(SECRET, instances) as backend:
        proxy = MetadataProxy(backend.url, SECRET, socket_path, lookup)
        proxy.start()
        try:
            assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
            transport = httpx.HTTPTransport(uds=str(socket_path))
            with httpx.Client(transport=transport, base_url="http://metadata") as client:
                answer = client.get(
                    "/latest/meta-data/local-ipv4", headers=asking("10.0.0.5"), timeout=10
                )
            assert (answer.status_code, answer.text) == (200, "10.0.0.5")
        finally:
            proxy.stop()
    assert not socket_path.exists()


def test_an_agent_refuses_a_secret_others_may_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    argv = [
        str(BIN / "astara-agent"),
        "--listen",
        f"unix:{tmp_path / 'agent.sock'}",
        "--state-dir",
        str(tmp_path / "state"),
        "--metadata-url",
        "http://127.0.0.1:8775",
        "--metadata-secret-file",
        str(secret),
    ]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "readable by its owner only" in refused.stderr and "s3cret" not in refused.stderr
    no_secret = subprocess.run(argv[:-2], capture_output=True, text=True, timeout=60)
    assert no_secret.returncode == 2 and "--metadata-secret-file" in no_secret.stderr
