"""The deployment's certificates: its CA, the controller's and the agents'.

Subjects are O=astara, OU=<role>, CN=<name>; the role says what a
certificate may do: `agent` (a host: serves the agent API, renews its own
certificate) or `controller` (the orchestrator calling agents; the control
listener's server certificate). Agents admit only OU=controller clients; the
control listener renews only OU=agent certificates.

Building and reading certificates are pure functions of their inputs (time
is a parameter); `ensure_ca` and friends at the end do the file I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from astara.linux.files import write_atomic

Role = Literal["agent", "controller"]
ROLES: tuple[Role, ...] = ("agent", "controller")
ORGANIZATION = "astara"
# The DNS name every control-listener certificate carries, and no other: an
# agent checks the controller against it (whatever address it dialled), so
# another host's certificate, signed by the same CA, cannot pose as it.
CONTROLLER_DNS_NAME = "astara-controller"

CA_LIFETIME = timedelta(days=3650)
CONTROLLER_LIFETIME = timedelta(days=365)
AGENT_LIFETIME = timedelta(days=30)
# Clocks differ a little: a new certificate is valid from a moment ago (at
# most a minute, at most a tenth of its life).
MAX_BACKDATE = timedelta(seconds=60)

_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")


class InvalidCertificate(ValueError):
    """A PEM text that is no certificate, CSR or key we accept."""


def check_host_name(name: str) -> str:
    """A host's name: what its certificate's CN and its Host row carry."""
    if not isinstance(name, str) or not _HOST_NAME.fullmatch(name):
        raise ValueError(
            "a host name is 1 to 64 letters, digits, '.' or '-', starting with a letter or digit"
        )
    return name


# -- keys and PEM ------------------------------------------------------------

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_key(pem: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise InvalidCertificate(f"not a PEM private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidCertificate("only EC and RSA keys are used")
    return key


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_cert(pem: str | bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as error:
        raise InvalidCertificate(f"not a PEM certificate: {error}") from None


def load_der_cert(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as error:
        raise InvalidCertificate(f"not a DER certificate: {error}") from None


# -- names ---------------------------------------------------------------------


def _subject(role: str, name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return x509.DNSName(value)


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: its role (OU), name (CN) and serial (hex)."""

    role: str
    name: str
    serial: str
    not_before: datetime  # naive UTC, as the database keeps times
    not_after: datetime


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    found = name.get_attributes_for_oid(oid)
    value = found[0].value if found else ""
    return value if isinstance(value, str) else value.decode()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def identity(cert: x509.Certificate) -> Identity:
    return Identity(
        role=_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        name=_attribute(cert.subject, NameOID.COMMON_NAME),
        serial=serial_hex(cert),
        not_before=cert.not_valid_before_utc.replace(tzinfo=None),
        not_after=cert.not_valid_after_utc.replace(tzinfo=None),
    )


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """The certificate's SANs as text (IP addresses and DNS names)."""
    try:
        found = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in found if isinstance(n, x509.IPAddress | x509.DNSName)]


def ca_hash(ca_cert: x509.Certificate) -> str:
    """Hex SHA-256 of the CA's SubjectPublicKeyInfo (kubeadm's discovery hash)."""
    spki = ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def renew_at(cert: x509.Certificate) -> datetime:
    """When a certificate's holder renews it: two thirds through its life (naive UTC)."""
    shown = identity(cert)
    return shown.not_before + (shown.not_after - shown.not_before) * 2 / 3


# -- building ------------------------------------------------------------------


@dataclass(frozen=True)
class CA:
    key: PrivateKey
    cert: x509.Certificate


def _aware(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def make_ca(key: PrivateKey, now: datetime, lifetime: timedelta = CA_LIFETIME) -> CA:
    now = _aware(now)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "astara deployment CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - MAX_BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(key, cert)


def make_csr(key: PrivateKey, name: str, role: Role = "agent") -> x509.CertificateSigningRequest:
    """A CSR for `name` (the CA sets the subject it issues anyway)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(role, name))
        .sign(key, hashes.SHA256())
    )


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    """A CSR we would sign: well-formed, self-signed by its key, and that key
    EC (P-256 or stronger) or RSA of 2048 bits or more."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, TypeError) as error:
        raise InvalidCertificate(f"not a PEM certificate request: {error}") from None
    if not valid:
        raise InvalidCertificate("the certificate request's signature does not verify")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < 256:
            raise InvalidCertificate("EC keys must be P-256 or stronger")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidCertificate("RSA keys must have 2048 bits or more")
    else:
        raise InvalidCertificate("only EC and RSA keys are accepted")
    return csr


def issue(
    ca: CA,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    role: Role,
    name: str,
    sans: list[str],
    now: datetime,
    lifetime: timedelta,
    *,
    server: bool = True,
    client: bool = True,
) -> x509.Certificate:
    """A certificate for `public_key`: O=astara, OU=`role`, CN=`name`, the
    SANs (IP addresses or DNS names), valid from now (a little before) for
    `lifetime`; `server`/`client` set its extended key usages. The subject is
    the CA's decision, never the requester's."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not server and not client:
        raise ValueError("a certificate must be usable as a server or a client")
    now = _aware(now)
    backdate = min(MAX_BACKDATE, lifetime / 10)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(role, name))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False
        )
    return builder.sign(ca.key, hashes.SHA256())


def issue_for_csr(
    ca: CA,
    csr: x509.CertificateSigningRequest,
    role: Role,
    name: str,
    sans: list[str],
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """`issue` for the key of a CSR checked by `load_csr` (server and client use)."""
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidCertificate("only EC and RSA keys are accepted")
    return issue(ca, key, role, name, sans, now, lifetime)


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# -- files ---------------------------------------------------------------------


def write_key(path: Path, key: PrivateKey) -> None:
    """A private key, 0600 from the moment it exists."""
    write_atomic(path, key_pem(key), mode=0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert_pem(cert), mode=0o644)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def ensure_ca(pki_dir: Path, now: datetime) -> CA:
    """The deployment CA in `pki_dir` (ca.key 0600, ca.crt), made on first use."""
    _private_dir(pki_dir)
    key_path, cert_path = pki_dir / "ca.key", pki_dir / "ca.crt"
    if key_path.exists() and cert_path.exists():
        ca = CA(load_key(key_path.read_text()), load_cert(cert_path.read_text()))
        if ca.cert.public_key() != ca.key.public_key():
            raise InvalidCertificate(f"{cert_path} does not belong to {key_path}")
        return ca
    if key_path.exists() or cert_path.exists():
        raise InvalidCertificate(
            f"{pki_dir} has only one of ca.key and ca.crt: restore the other (a new CA would"
            " orphan every joined host)"
        )
    ca = make_ca(new_key(), now)
    write_key(key_path, ca.key)
    write_cert(cert_path, ca.cert)
    return ca


def _needs_new(cert_path: Path, key_path: Path, ca: CA, now: datetime) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return True
    try:
        cert, key = load_cert(cert_path.read_text()), load_key(key_path.read_text())
    except InvalidCertificate:
        return True
    naive = now.replace(tzinfo=None)
    return (
        cert.public_key() != key.public_key()
        or not issued_by(cert, ca.cert)
        or naive >= renew_at(cert)
    )


def ensure_controller_cert(
    pki_dir: Path, ca: CA, now: datetime, lifetime: timedelta = CONTROLLER_LIFETIME
) -> tuple[Path, Path]:
    """The orchestrator's client certificate (OU=controller, CN=controller):
    pki_dir/controller.{crt,key}, issued anew when missing, not this CA's,
    or two thirds through its life. Returns (cert, key) paths."""
    cert_path, key_path = pki_dir / "controller.crt", pki_dir / "controller.key"
    if _needs_new(cert_path, key_path, ca, now):
        key = new_key()
        cert = issue(
            ca, key.public_key(), "controller", "controller", [], now, lifetime, server=False
        )
        write_key(key_path, key)
        write_cert(cert_path, cert)
    return cert_path, key_path


def ensure_listener_cert(
    pki_dir: Path, ca: CA, host: str, now: datetime, lifetime: timedelta = CONTROLLER_LIFETIME
) -> tuple[Path, Path]:
    """The control listener's server certificate, issued at every start: SANs
    CONTROLLER_DNS_NAME (what agents check), the listen address (unless a
    wildcard), localhost and 127.0.0.1. Returns (cert, key) paths."""
    cert_path, key_path = pki_dir / "control-listener.crt", pki_dir / "control-listener.key"
    sans = [CONTROLLER_DNS_NAME, "localhost", "127.0.0.1"]
    bare = host.strip("[]")
    if bare not in ("", "0.0.0.0", "::") and bare not in sans:
        sans.append(bare)
    key = new_key()
    cert = issue(
        ca, key.public_key(), "controller", "control-listener", sans, now, lifetime, client=False
    )
    write_key(key_path, key)
    write_cert(cert_path, cert)
    return cert_path, key_path


# -- join tokens -----------------------------------------------------------------

TOKEN_ID_LENGTH = 6
TOKEN_SECRET_LENGTH = 16
_TOKEN = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})\.([0-9a-f]{64})")


@dataclass(frozen=True)
class JoinTokenParts:
    """`<id>.<secret>.<cahash>`: the row to find, the secret whose SHA-256 it
    keeps, and the hash of the CA the joining agent must find."""

    id: str
    secret: str
    ca_hash: str


def parse_join_token(text: str) -> JoinTokenParts:
    found = _TOKEN.fullmatch(text.strip()) if isinstance(text, str) else None
    if found is None:
        raise ValueError(
            "a join token is ID.SECRET.CAHASH (6 and 16 lowercase letters or digits,"
            " 64 hex digits): make one with `astara host join-token`"
        )
    return JoinTokenParts(*found.groups())


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
