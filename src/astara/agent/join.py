"""An agent joining a deployment, and renewing its certificate after.

Joining (kubeadm's discovery): fetch the controller's CA without trusting
the connection, check its hash against the one in the join token before
sending anything else, then send the token and a CSR over TLS verified
against that CA. The key is made here and never leaves the host. The files,
in STATE_DIR/tls: agent.key (0600), agent.crt, ca.crt, and join.json
(written last: its presence means joined; a restart does not join again).

The controller is checked by its certificate's chain to the pinned CA and
its name `pki.CONTROLLER_DNS_NAME` (sent as SNI and checked as the host
name), whatever address the agent dialled; agents' certificates never carry
that name, so another host cannot pose as the controller.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from astara import __version__, pki
from astara.agent.tls import ClientTLS, client_context
from astara.linux.files import write_atomic

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
# While renewal fails: try again after this long at most (and at least 1 s).
RETRY_MAX_S = 30.0


class JoinError(RuntimeError):
    """Joining failed; the message says why and what to do."""


@dataclass(frozen=True)
class TlsFiles:
    dir: Path

    @property
    def key(self) -> Path:
        return self.dir / "agent.key"

    @property
    def cert(self) -> Path:
        return self.dir / "agent.crt"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def joined(self) -> Path:
        return self.dir / "join.json"


@dataclass(frozen=True)
class Joined:
    """What join.json keeps: where the controller is, and who we are there."""

    controller: str
    name: str
    advertise: str


@dataclass(frozen=True)
class JoinRequest:
    controller: str
    token: str
    name: str
    advertise: str
    underlay_address: str | None = None
    physnets: dict[str, str] | None = None
    availability_zone: str = "nova"


def read_joined(files: TlsFiles) -> Joined | None:
    if not files.joined.exists():
        return None
    found = json.loads(files.joined.read_text())
    return Joined(found["controller"], found["name"], found["advertise"])


def _controller_tls(files: TlsFiles, with_cert: bool) -> ssl.SSLContext:
    return client_context(
        ClientTLS(
            ca=files.ca,
            cert=files.cert if with_cert else None,
            key=files.key if with_cert else None,
            server_name=pki.CONTROLLER_DNS_NAME,
        )
    )


_SNI = {"sni_hostname": pki.CONTROLLER_DNS_NAME}


def _refusal(response: httpx.Response) -> str:
    try:
        detail = response.json()["detail"]
        return f"{response.status_code} {detail.get('kind')}: {detail.get('message')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{response.status_code} {response.text[:200]}"


def fetch_ca(controller: str, expected_hash: str) -> str:
    """The controller's CA certificate (PEM), once its hash is the token's."""
    try:
        # Not verified, on purpose: nothing is trusted until the hash matches.
        response = httpx.get(f"{controller}/v1/ca", verify=False, timeout=TIMEOUT_S)
        response.raise_for_status()
        ca_pem = response.json()["ca_pem"]
        found = pki.ca_hash(pki.load_cert(ca_pem))
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        raise JoinError(f"cannot read the CA of the controller at {controller}: {error}") from None
    if not hmac.compare_digest(found, expected_hash):
        raise JoinError(
            f"the controller at {controller} has CA hash {found}, the token says {expected_hash}:"
            " refusing to join (a wrong address, or someone in between)"
        )
    assert isinstance(ca_pem, str)
    return ca_pem


def _check_issued(cert_pem: str, key: pki.PrivateKey, ca: Any) -> Any:
    cert = pki.load_cert(cert_pem)
    if cert.public_key() != key.public_key() or not pki.issued_by(cert, ca):
        raise JoinError("the controller sent a certificate that is not ours or not its CA's")
    return cert


def join(files: TlsFiles, request: JoinRequest) -> Joined:
    """Join the deployment: the CA checked against the token, the key made
    here, the certificate obtained; the files written (join.json last)."""
    try:
        parts = pki.parse_join_token(request.token)
    except ValueError as error:
        raise JoinError(str(error)) from None
    controller = request.controller.rstrip("/")
    if not controller.startswith("https://"):
        raise JoinError(f"{request.controller}: the controller's URL is https://HOST:PORT")
    ca_pem = fetch_ca(controller, parts.ca_hash)
    ca_cert = pki.load_cert(ca_pem)
    files.dir.mkdir(parents=True, exist_ok=True)
    files.dir.chmod(0o700)
    write_atomic(files.ca, ca_pem, mode=0o644)
    key = pki.new_key()
    pki.write_key(files.key, key)
    body = {
        "token": request.token,
        "csr_pem": pki.csr_pem(pki.make_csr(key, request.name)),
        "name": request.name,
        "advertise": request.advertise,
        "underlay_address": request.underlay_address,
        "physnets": request.physnets or {},
        "availability_zone": request.availability_zone,
        "version": __version__,
    }
    try:
        with httpx.Client(verify=_controller_tls(files, False), timeout=TIMEOUT_S) as client:
            response = client.post(f"{controller}/v1/join", json=body, extensions=_SNI)
    except httpx.HTTPError as error:
        raise JoinError(f"cannot join at {controller}: {error}") from None
    if response.status_code == 401:
        raise JoinError(
            "the controller refused the token (unknown, expired or used): make a new one"
            " with `astara host join-token`"
        )
    if response.status_code != 201:
        raise JoinError(f"the controller refused the join: {_refusal(response)}")
    issued = response.json()
    if pki.ca_hash(pki.load_cert(issued["ca_pem"])) != parts.ca_hash:
        raise JoinError("the controller answered with another CA than the token's")
    cert = _check_issued(issued["certificate_pem"], key, ca_cert)
    pki.write_cert(files.cert, cert)
    joined = Joined(controller, request.name, request.advertise)
    write_atomic(files.joined, json.dumps(asdict(joined), indent=2) + "\n", mode=0o644)
    log.info("joined %s as %s (certificate %s)", controller, joined.name, pki.serial_hex(cert))
    return joined


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Renewer:
    """Renews the agent's certificate two thirds through its life, in a
    thread: a CSR for the same key (so the key and certificate files never
    disagree), the new certificate written atomically and loaded into the
    server's `context` (new handshakes present it)."""

    def __init__(
        self,
        files: TlsFiles,
        joined: Joined,
        context: ssl.SSLContext,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.files, self.joined, self.context, self.clock = files, joined, context, clock
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def renew_once(self) -> None:
        key = pki.load_key(self.files.key.read_text())
        body = {"csr_pem": pki.csr_pem(pki.make_csr(key, self.joined.name))}
        with httpx.Client(verify=_controller_tls(self.files, True), timeout=TIMEOUT_S) as client:
            response = client.post(f"{self.joined.controller}/v1/renew", json=body, extensions=_SNI)
        if response.status_code != 200:
            raise JoinError(f"the controller refused to renew: {_refusal(response)}")
        ca_cert = pki.load_cert(self.files.ca.read_text())
        cert = _check_issued(response.json()["certificate_pem"], key, ca_cert)
        pki.write_cert(self.files.cert, cert)
        self.context.load_cert_chain(str(self.files.cert), str(self.files.key))
        self.renewals += 1
        log.info(
            "renewed the certificate: serial %s until %s",
            pki.serial_hex(cert),
            pki.identity(cert).not_after,
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            cert = pki.load_cert(self.files.cert.read_text())
            wait_s = (pki.renew_at(cert) - self.clock()).total_seconds()
            if wait_s > 0:
                if self._stop.wait(wait_s):
                    return
                continue
            try:
                self.renew_once()
            except (JoinError, httpx.HTTPError, OSError, ValueError, KeyError) as error:
                left_s = (pki.identity(cert).not_after - self.clock()).total_seconds()
                retry_s = min(RETRY_MAX_S, max(1.0, left_s / 10))
                log.error("certificate renewal failed (%s); again in %.0f s", error, retry_s)
                if self._stop.wait(retry_s):
                    return
