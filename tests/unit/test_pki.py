"""The deployment's certificates, built and read without any I/O but files
in a temporary directory."""

from __future__ import annotations

import hashlib
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from astara import pki

NOW = datetime(2026, 11, 25, 12, 0)


@pytest.fixture(scope="module")
def ca() -> pki.CA:
    return pki.make_ca(pki.new_key(), NOW)


def test_the_ca_is_a_ca_and_its_hash_is_the_spki_digest(ca: pki.CA) -> None:
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    spki = ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pki.ca_hash(ca.cert) == hashlib.sha256(spki).hexdigest()
    assert len(pki.ca_hash(ca.cert)) == 64


def test_an_agent_certificate_names_the_host_its_role_and_address(ca: pki.CA) -> None:
    key = pki.new_key()
    csr = pki.load_csr(pki.csr_pem(pki.make_csr(key, "whatever-the-agent-asks")))
    cert = pki.issue_for_csr(ca, csr, "agent", "h2", ["192.0.2.7"], NOW, timedelta(days=30))
    shown = pki.identity(cert)
    # The CA decides the subject, not the requester.
    assert (shown.role, shown.name) == ("agent", "h2")
    assert shown.not_after == NOW + timedelta(days=30)
    assert shown.not_before == NOW - pki.MAX_BACKDATE
    assert pki.subject_alt_names(cert) == ["192.0.2.7"]
    assert pki.issued_by(cert, ca.cert)
    assert cert.public_key() == key.public_key()
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert pki.renew_at(cert) == shown.not_before + (shown.not_after - shown.not_before) * 2 / 3


def test_a_short_lived_certificate_is_backdated_by_a_tenth_of_its_life(ca: pki.CA) -> None:
    cert = pki.issue(ca, pki.new_key().public_key(), "agent", "h", [], NOW, timedelta(seconds=20))
    assert pki.identity(cert).not_before == NOW - timedelta(seconds=2)


def test_dns_names_and_ipv6_become_the_right_kind_of_san(ca: pki.CA) -> None:
    cert = pki.issue(
        ca,
        pki.new_key().public_key(),
        "agent",
        "h",
        ["[2001:db8::1]", "h.example"],
        NOW,
        timedelta(days=1),
    )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in names.get_values_for_type(x509.IPAddress)] == ["2001:db8::1"]
    assert names.get_values_for_type(x509.DNSName) == ["h.example"]


def test_a_certificate_of_another_ca_is_not_ours(ca: pki.CA) -> None:
    other = pki.make_ca(pki.new_key(), NOW)
    cert = pki.issue(
        other, pki.new_key().public_key(), "controller", "controller", [], NOW, timedelta(days=1)
    )
    assert not pki.issued_by(cert, ca.cert)
    assert pki.ca_hash(other.cert) != pki.ca_hash(ca.cert)


def test_weak_or_broken_requests_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(pki.InvalidCertificate, match="2048"):
        pki.load_csr(pki.csr_pem(pki.make_csr(weak, "h")))
    small = ec.generate_private_key(ec.SECP192R1())
    with pytest.raises(pki.InvalidCertificate, match="P-256"):
        pki.load_csr(pki.csr_pem(pki.make_csr(small, "h")))
    with pytest.raises(pki.InvalidCertificate, match="not a PEM"):
        pki.load_csr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----")
    with pytest.raises(ValueError, match="role"):
        pki.issue(
            pki.make_ca(pki.new_key(), NOW),
            pki.new_key().public_key(),
            "root",  # type: ignore[arg-type]
            "h",
            [],
            NOW,
            timedelta(days=1),
        )


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        ("abc123.0123456789abcdef." + "a" * 64, True),
        ("abc12.0123456789abcdef." + "a" * 64, False),
        ("abc123.0123456789abcdeF." + "a" * 64, False),
        ("abc123.0123456789abcdef." + "g" * 64, False),
        ("abc123.0123456789abcdef", False),
        ("", False),
    ],
)
def test_join_tokens_parse_strictly(token: str, ok: bool) -> None:
    if ok:
        parts = pki.parse_join_token(token)
        assert (parts.id, parts.secret, parts.ca_hash) == tuple(token.split("."))
    else:
        with pytest.raises(ValueError, match=r"ID\.SECRET\.CAHASH"):
            pki.parse_join_token(token)


@pytest.mark.parametrize("name", ["", "-h", "h" * 65, "h_2", "h 2", "ü"])
def test_bad_host_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        pki.check_host_name(name)


def test_the_ca_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    made = pki.ensure_ca(directory, NOW)
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again = pki.ensure_ca(directory, NOW + timedelta(days=1))
    assert pki.ca_hash(again.cert) == pki.ca_hash(made.cert)
    (directory / "ca.crt").unlink()
    with pytest.raises(pki.InvalidCertificate, match="only one of"):
        pki.ensure_ca(directory, NOW)


def test_the_controller_certificate_is_kept_until_two_thirds_of_its_life(tmp_path: Path) -> None:
    ca = pki.ensure_ca(tmp_path, NOW)
    cert_path, key_path = pki.ensure_controller_cert(tmp_path, ca, NOW)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    first = pki.load_cert(cert_path.read_text())
    shown = pki.identity(first)
    assert (shown.role, shown.name) == ("controller", "controller")
    usages = first.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # never a server
    pki.ensure_controller_cert(tmp_path, ca, NOW + timedelta(days=200))
    assert pki.serial_hex(pki.load_cert(cert_path.read_text())) == shown.serial
    pki.ensure_controller_cert(tmp_path, ca, NOW + timedelta(days=250))
    assert pki.serial_hex(pki.load_cert(cert_path.read_text())) != shown.serial


def test_the_listener_carries_the_controller_name_and_its_address(tmp_path: Path) -> None:
    ca = pki.ensure_ca(tmp_path, NOW)
    cert_path, _ = pki.ensure_listener_cert(tmp_path, ca, "192.0.2.1", NOW)
    cert = pki.load_cert(cert_path.read_text())
    assert pki.subject_alt_names(cert) == [
        pki.CONTROLLER_DNS_NAME,
        "localhost",
        "127.0.0.1",
        "192.0.2.1",
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]  # never a client
