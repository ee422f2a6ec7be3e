"""Join tokens, joins and renewals: the admin route through the tenant API,
the control app in-process for joins, and a real TLS control listener (a
uvicorn server in a thread) where client certificates matter."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from astara import pki
from astara.agent.tls import ClientTLS, client_context
from astara.api.app import create_app
from astara.api.bootstrap import ensure_admin
from astara.api.control import ControlListener, control_context, create_control_app
from astara.api.trust import Authority
from astara.db.models import Host, JoinToken, RevokedCertificate
from tests.component.conftest import NOW, Api, project


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority(pki.make_ca(pki.new_key(), NOW), timedelta(days=30))


@pytest.fixture
def api(engine: Engine, tmp_path: Path, authority: Authority) -> Api:
    token = ensure_admin(engine, tmp_path, "http://testserver", NOW)
    return Api(TestClient(create_app(engine, ca_hash=authority.ca_hash)), token)


@pytest.fixture
def control(engine: Engine, authority: Authority) -> TestClient:
    return TestClient(create_control_app(engine, authority))


def make_token(api: Api, ttl_s: int = 3600) -> str:
    response = api("POST", "/astara/v1/hosts/join-tokens", {"ttl_s": ttl_s})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def join_body(token: str, name: str = "h2", **extra: Any) -> tuple[dict[str, Any], Any]:
    key = pki.new_key()
    body = {
        "token": token,
        "csr_pem": pki.csr_pem(pki.make_csr(key, name)),
        "name": name,
        "advertise": "192.0.2.2:9698",
        "underlay_address": "203.0.113.2",
        "physnets": {"public": "eth1"},
        "availability_zone": "az1",
        "version": "test",
        **extra,
    }
    return body, key


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        hosts = session.scalar(select(func.count()).select_from(Host)) or 0
        used = session.scalar(
            select(func.count()).select_from(JoinToken).where(JoinToken.used_at.is_not(None))
        )
        return hosts, used or 0


def test_an_admin_makes_a_token_carrying_the_ca_hash(
    api: Api, engine: Engine, authority: Authority
) -> None:
    response = api("POST", "/astara/v1/hosts/join-tokens")
    assert response.status_code == 201
    shown = response.json()
    parts = pki.parse_join_token(shown["token"])
    assert parts.ca_hash == authority.ca_hash
    with Session(engine) as session:
        row = session.get(JoinToken, parts.id)
        assert row is not None
        # Only the digest is kept; the default life is an hour.
        assert row.secret_sha256 == pki.secret_digest(parts.secret) != parts.secret
        assert shown["expires_at"] == (row.created_at + timedelta(hours=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )


@pytest.mark.parametrize("body", [{"ttl_s": 59}, {"ttl_s": 86401}, {"ttl_s": "60"}, {"x": 1}, []])
def test_bad_token_requests_are_refused(api: Api, engine: Engine, body: Any) -> None:
    response = api("POST", "/astara/v1/hosts/join-tokens", body)
    assert response.status_code == 400, response.text
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(JoinToken)) == 0


def test_only_admins_make_tokens(api: Api) -> None:
    tenant = project(api, "p1")
    assert tenant("POST", "/astara/v1/hosts/join-tokens", {}).status_code == 403


def test_a_join_creates_the_host_and_spends_the_token(
    api: Api, control: TestClient, engine: Engine, authority: Authority
) -> None:
    token = make_token(api)
    body, key = join_body(token)
    response = control.post("/v1/join", json=body)
    assert response.status_code == 201, response.text
    cert = pki.load_cert(response.json()["certificate_pem"])
    assert cert.public_key() == key.public_key()
    assert pki.issued_by(cert, authority.ca.cert)
    shown = pki.identity(cert)
    assert (shown.role, shown.name) == ("agent", "h2")
    assert pki.subject_alt_names(cert) == ["192.0.2.2"]
    with Session(engine) as session:
        host = session.scalar(select(Host).where(Host.name == "h2"))
        assert host is not None
        assert host.address == "https://192.0.2.2:9698"
        assert host.underlay_address == "203.0.113.2"
        assert host.physnets == {"public": "eth1"}
        assert host.availability_zone == "az1"
        assert host.cert_serial == shown.serial
        assert host.cert_not_after == shown.not_after
    # Used once: the same token again is refused, and nothing changes.
    again = control.post("/v1/join", json=join_body(token, "h3")[0])
    assert again.status_code == 401
    assert again.json()["detail"]["kind"] == "InvalidJoinToken"
    assert counts(engine) == (1, 1)


def test_a_taken_name_is_a_conflict_and_the_token_is_not_spent(
    api: Api, control: TestClient, engine: Engine
) -> None:
    assert control.post("/v1/join", json=join_body(make_token(api))[0]).status_code == 201
    token = make_token(api)
    assert control.post("/v1/join", json=join_body(token)[0]).status_code == 409
    assert control.post("/v1/join", json=join_body(token, "h3")[0]).status_code == 201
    assert counts(engine) == (2, 2)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"token": "abc123.0123456789abcdef." + "0" * 64}, 401),
        ({"name": "bad name"}, 400),
        ({"advertise": "0.0.0.0:1"}, 400),
        ({"advertise": "astara-controller:1"}, 400),
        ({"underlay_address": "not-an-ip"}, 400),
        ({"physnets": {"public": "this-name-is-too-long"}}, 400),
        ({"csr_pem": "nonsense"}, 400),
        ({"surprise": 1}, 400),
    ],
)
def test_bad_joins_change_nothing(
    api: Api, control: TestClient, engine: Engine, change: dict[str, Any], status: int
) -> None:
    token = make_token(api)
    body = {**join_body(token)[0], **change}
    response = control.post("/v1/join", json=body)
    assert response.status_code == status, response.text
    assert counts(engine) == (0, 0)


def test_wrong_secret_or_wrong_ca_hash_is_refused(api: Api, control: TestClient) -> None:
    token = make_token(api)
    token_id, secret, ca_hash = token.split(".")
    for wrong in (f"{token_id}.{'0' * 16}.{ca_hash}", f"{token_id}.{secret}.{'0' * 64}"):
        assert control.post("/v1/join", json=join_body(wrong)[0]).status_code == 401
    assert control.post("/v1/join", json=join_body(token)[0]).status_code == 201


def test_an_expired_token_is_refused(api: Api, control: TestClient, engine: Engine) -> None:
    token = make_token(api, ttl_s=60)
    with Session(engine) as session, session.begin():
        row = session.get(JoinToken, token.split(".")[0])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert control.post("/v1/join", json=join_body(token)[0]).status_code == 401
    assert counts(engine) == (0, 0)


def test_two_joins_racing_with_one_token_one_wins(
    api: Api, control: TestClient, engine: Engine
) -> None:
    token = make_token(api)
    bodies = [join_body(token, f"r{i}")[0] for i in range(6)]
    statuses: list[int] = []
    start = threading.Barrier(len(bodies))

    def attempt(body: dict[str, Any]) -> None:
        start.wait()
        statuses.append(control.post("/v1/join", json=body).status_code)

    threads = [threading.Thread(target=attempt, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [401] * 5
    assert counts(engine) == (1, 1)


# -- over real TLS -------------------------------------------------------------


@dataclass
class Listener:
    url: str
    pki_dir: Path
    authority: Authority


@pytest.fixture
def listener(engine: Engine, tmp_path: Path) -> Iterator[Listener]:
    pki_dir = tmp_path / "pki"
    ca = pki.ensure_ca(pki_dir, utcnow())
    authority = Authority(ca, timedelta(minutes=10))
    served = ControlListener(
        engine,
        authority,
        control_context(pki_dir, ca, "127.0.0.1", utcnow()),
        "127.0.0.1",
        0,
        "warning",
    )
    port = served.socket.getsockname()[1]
    served.start()
    deadline = time.monotonic() + 20
    while not served.server.started:
        assert time.monotonic() < deadline, "the control listener did not start"
        time.sleep(0.02)
    try:
        yield Listener(f"https://127.0.0.1:{port}", pki_dir, authority)
    finally:
        served.stop()


def _write_identity(directory: Path, cert: Any, key: Any) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    pki.write_cert(directory / "c.crt", cert)
    pki.write_key(directory / "c.key", key)
    return directory / "c.crt", directory / "c.key"


def _client(listener: Listener, cert: Path | None = None, key: Path | None = None) -> httpx.Client:
    tls = ClientTLS(ca=listener.pki_dir / "ca.crt", cert=cert, key=key)
    return httpx.Client(base_url=listener.url, verify=client_context(tls), timeout=10)


def _joined(listener: Listener, engine: Engine, tmp_path: Path) -> tuple[Path, Path, Any]:
    """A host h2 joined through the listener: its cert and key files."""
    with Session(engine) as session, session.begin():
        from astara.api.auth import Caller
        from astara.api.trust import create_join_token

        token = create_join_token(
            session, Caller("x", "admin", True), {}, utcnow(), listener.authority.ca_hash
        )["token"]
    body, key = join_body(token, advertise="127.0.0.1:1")
    with _client(listener) as client:
        response = client.post("/v1/join", json=body)
    assert response.status_code == 201, response.text
    cert = pki.load_cert(response.json()["certificate_pem"])
    cert_path, key_path = _write_identity(tmp_path / "h2", cert, key)
    return cert_path, key_path, key


def test_a_host_renews_with_its_current_certificate_and_only_with_it(
    listener: Listener, engine: Engine, tmp_path: Path
) -> None:
    with _client(listener) as client:
        assert client.get("/v1/ca").json()["ca_hash"] == listener.authority.ca_hash
    cert_path, key_path, key = _joined(listener, engine, tmp_path)
    old = pki.identity(pki.load_cert(cert_path.read_text()))
    renew = {"csr_pem": pki.csr_pem(pki.make_csr(key, "h2"))}
    with _client(listener, cert_path, key_path) as client:
        response = client.post("/v1/renew", json=renew)
    assert response.status_code == 200, response.text
    new = pki.identity(pki.load_cert(response.json()["certificate_pem"]))
    assert (new.name, new.role) == ("h2", "agent") and new.serial != old.serial
    with Session(engine) as session:
        host = session.scalar(select(Host).where(Host.name == "h2"))
        assert host is not None and host.cert_serial == new.serial
        revoked = session.get(RevokedCertificate, old.serial)
        assert revoked is not None and revoked.host_name == "h2"
    # The replaced certificate cannot renew again, before any body is read.
    with _client(listener, cert_path, key_path) as client:
        response = client.post("/v1/renew", content=b"not even json")
    assert response.status_code == 403
    assert response.json()["detail"]["kind"] == "CertificateRevoked"


def test_renewal_needs_an_agent_certificate_of_this_ca(
    listener: Listener, engine: Engine, tmp_path: Path
) -> None:
    body = {"csr_pem": pki.csr_pem(pki.make_csr(pki.new_key(), "h2"))}
    with _client(listener) as client:
        assert client.post("/v1/renew", json=body).status_code == 401
    controller = pki.ensure_controller_cert(listener.pki_dir, listener.authority.ca, utcnow())
    with _client(listener, *controller) as client:
        assert client.post("/v1/renew", json=body).status_code == 403
    # Signed by another CA (same names): the handshake itself fails.
    forger = pki.make_ca(pki.new_key(), utcnow())
    key = pki.new_key()
    forged = pki.issue(forger, key.public_key(), "agent", "h2", [], utcnow(), timedelta(days=1))
    paths = _write_identity(tmp_path / "forged", forged, key)
    with _client(listener, *paths) as client, pytest.raises(httpx.TransportError):
        client.post("/v1/renew", json=body)
    # Removed (revoked): refused.
    cert_path, key_path, _ = _joined(listener, engine, tmp_path)
    with Session(engine) as session, session.begin():
        host = session.scalar(select(Host).where(Host.name == "h2"))
        assert host is not None
        session.add(
            RevokedCertificate(
                serial=host.cert_serial,
                host_name="h2",
                revoked_at=utcnow(),
                not_after=host.cert_not_after,
            )
        )
        session.delete(host)
    with _client(listener, cert_path, key_path) as client:
        assert client.post("/v1/renew", json=body).status_code == 403
