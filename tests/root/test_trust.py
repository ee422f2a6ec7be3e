"""A real `astara serve` and a real `astara-agent` that joins it with a
token and then speaks only mutual TLS: who gets in, who does not, and that
nothing changes when someone is refused."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from astara import pki
from astara.agent.client import AgentClient, AgentError
from astara.agent.tls import ClientTLS, client_context
from astara.db.engine import make_engine, sqlite_url
from astara.db.models import Host, RevokedCertificate
from astara.linux import cleanup
from astara.testing.agent import unique_prefix
from astara.testing.net import free_port, wait_until
from astara.testing.server import BIN, Cloud, Server

pytestmark = pytest.mark.root

LIFETIME_S = 20  # agents' certificates: renewed about every 13 s


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Agent:
    """`astara-agent serve --join ...` as a process, restartable."""

    def __init__(self, state_dir: Path, controller: str, token: str) -> None:
        self.state_dir, self.prefix, self.port = state_dir, unique_prefix("j"), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.argv = [
            str(BIN / "astara-agent"), "--state-dir", str(state_dir),
            "--prefix", self.prefix, "--join", controller, "--token", token, "--name", "h2",
            "--listen", f"tcp:127.0.0.1:{self.port}", "--advertise", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir.parent / "agent.log", "ab") as log:
            self.process = subprocess.Popen(argv or self.argv, stdout=log, stderr=subprocess.STDOUT)
        return self.process

    def log(self) -> str:
        return (self.state_dir.parent / "agent.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Trust:
    def __init__(self, cloud: Cloud, agent: Agent) -> None:
        self.cloud, self.agent = cloud, agent
        self.pki = cloud.server.state_dir / "pki"
        self.engine: Engine = make_engine(sqlite_url(cloud.server.state_dir.resolve()))

    def controller(self) -> ClientTLS:
        return ClientTLS(
            self.pki / "ca.crt", self.pki / "controller.crt", self.pki / "controller.key"
        )

    def client(self, tls: ClientTLS | None = None) -> AgentClient:
        return AgentClient(self.agent.url, timeout_s=10, tls=tls or self.controller())

    def host(self) -> Host | None:
        with Session(self.engine) as session:
            return session.scalar(select(Host).where(Host.name == "h2"))

    def host_count(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Host)) or 0

    def identity(
        self,
        tmp: Path,
        role: pki.Role,
        name: str,
        ca: pki.CA | None = None,
        now: datetime | None = None,
        lifetime: timedelta = timedelta(days=1),
    ) -> ClientTLS:
        """A client identity signed by `ca` (default: the deployment's)."""
        ca = ca or pki.ensure_ca(self.pki, utcnow())
        key = pki.new_key()
        cert = pki.issue(ca, key.public_key(), role, name, [], now or utcnow(), lifetime)
        pki.write_cert(tmp / f"{name}.crt", cert)
        pki.write_key(tmp / f"{name}.key", key)
        return ClientTLS(self.pki / "ca.crt", tmp / f"{name}.crt", tmp / f"{name}.key")

    def served_serial(self) -> str:
        """The serial of the certificate the agent presents now."""
        context = client_context(self.controller())
        with (
            socket.create_connection(("127.0.0.1", self.agent.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
        ):
            der = wrapped.getpeercert(binary_form=True)
        assert der is not None
        return pki.serial_hex(pki.load_der_cert(der))


@pytest.fixture
def trust(tmp_path: Path) -> Iterator[Trust]:
    server = Server(tmp_path / "var", None, "--agent-cert-lifetime-s", str(LIFETIME_S))
    agent: Agent | None = None
    try:
        server.start()
        cloud = Cloud(server)
        token = cloud("POST", "/astara/v1/hosts/join-tokens", {"ttl_s": 600}, 201)["token"]
        agent = Agent(tmp_path / "agent", server.control_url, token)
        agent.start()
        found = Trust(cloud, agent)

        def answering() -> bool:
            assert agent is not None and agent.process is not None
            if agent.process.poll() is not None:
                raise AssertionError(f"the agent exited: {agent.log()[-3000:]}")
            try:
                with found.client() as client:
                    return client.health() is not None
            except (httpx.TransportError, OSError):
                return False

        wait_until(answering, 60, 0.2, "the joined agent to answer over mutual TLS")
        yield found
    finally:
        if agent is not None:
            agent.stop()
            cleanup.remove_all(agent.prefix)
            assert not any(cleanup.leftovers(agent.prefix).values())
        server.stop()


def test_trust_end_to_end(trust: Trust, tmp_path: Path) -> None:
    agent, cloud = trust.agent, trust.cloud
    host = trust.host()
    assert host is not None
    assert host.address == agent.url
    files = agent.state_dir / "tls"
    assert oct((files / "agent.key").stat().st_mode & 0o777) == "0o600"
    joined_serial = host.cert_serial

    # The controller's certificate gets in; the agent's certificate names its address.
    with trust.client() as client:
        assert client.health()["version"]
    assert pki.subject_alt_names(pki.load_cert((files / "agent.crt").read_text())) == ["127.0.0.1"]

    # A look-alike from another CA, and an expired one of ours: refused at TLS.
    forger = pki.make_ca(pki.new_key(), utcnow())
    forged = trust.identity(tmp_path, "controller", "controller", ca=forger)
    expired = trust.identity(
        tmp_path, "controller", "old", now=utcnow() - timedelta(days=2), lifetime=timedelta(days=1)
    )
    for refused in (forged, expired):
        with trust.client(refused) as client, pytest.raises(httpx.TransportError):
            client.health()
    # Another host's (OU=agent) certificate of our CA: no route runs.
    other_host = trust.identity(tmp_path, "agent", "h9")
    with trust.client(other_host) as client, pytest.raises(AgentError) as refusal:
        client.health()
    assert refusal.value.status_code == 403

    # The join token again: 401, and nothing changes.
    token = agent.argv[agent.argv.index("--token") + 1]
    body = {
        "token": token,
        "csr_pem": pki.csr_pem(pki.make_csr(pki.new_key(), "h3")),
        "name": "h3",
        "advertise": "127.0.0.1:1",
    }
    listener = ClientTLS(trust.pki / "ca.crt")
    with httpx.Client(verify=client_context(listener), timeout=10) as http:
        response = http.post(f"{cloud.server.control_url}/v1/join", json=body)
    assert response.status_code == 401, response.text
    assert trust.host_count() == 1

    # Renewal: a new certificate two thirds through the old one's life, served at once.
    def renewed() -> str | None:
        found = trust.host()
        return found.cert_serial if found and found.cert_serial != joined_serial else None

    serial = wait_until(renewed, LIFETIME_S * 2, 0.5, "the agent to renew its certificate")
    wait_until(lambda: trust.served_serial() == serial, 10, 0.2, "the agent to serve it")
    with Session(trust.engine) as session:
        assert session.get(RevokedCertificate, joined_serial) is not None
    with trust.client() as client:
        assert client.health()

    # A restart does not join again (its token is spent): it serves what it has.
    agent.stop()
    agent.start()
    wait_until(lambda: _answers(trust), 60, 0.2, "the restarted agent to answer")
    assert "already joined as h2" in agent.log()
    assert trust.host_count() == 1

    # Removed (its certificate revoked): it cannot renew any more.
    agent.stop()
    with Session(trust.engine) as session, session.begin():
        found = session.scalar(select(Host).where(Host.name == "h2"))
        assert found is not None and found.cert_serial is not None
        assert found.cert_not_after is not None
        session.add(
            RevokedCertificate(
                serial=found.cert_serial,
                host_name="h2",
                revoked_at=utcnow(),
                not_after=found.cert_not_after,
            )
        )
        session.delete(found)
    tls = ClientTLS(files / "ca.crt", files / "agent.crt", files / "agent.key")
    renewal = {
        "csr_pem": pki.csr_pem(pki.make_csr(pki.load_key((files / "agent.key").read_text()), "h2"))
    }
    with httpx.Client(verify=client_context(tls), timeout=10) as http:
        response = http.post(
            f"{cloud.server.control_url}/v1/renew",
            json=renewal,
            extensions={"sni_hostname": pki.CONTROLLER_DNS_NAME},
        )
    assert response.status_code == 403, response.text
    assert trust.host_count() == 0


def _answers(trust: Trust) -> bool:
    try:
        with trust.client() as client:
            return client.health() is not None
    except (httpx.TransportError, OSError, ssl.SSLError):
        return False


def test_a_wrong_ca_hash_stops_the_join_before_anything_is_sent(tmp_path: Path) -> None:
    server = Server(tmp_path / "var")
    try:
        server.start()
        token = Cloud(server)("POST", "/astara/v1/hosts/join-tokens", {}, 201)["token"]
        wrong = token.rsplit(".", 1)[0] + "." + "0" * 64
        agent = Agent(tmp_path / "agent", server.control_url, wrong)
        result = subprocess.run(agent.argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "refusing to join" in result.stderr
        assert not (tmp_path / "agent" / "tls" / "join.json").exists()
        # Nothing was sent: the token is still good.
        engine = make_engine(sqlite_url(server.state_dir.resolve()))
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Host)) == 0
        cleanup.remove_all(agent.prefix)
    finally:
        server.stop()
