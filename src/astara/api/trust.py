"""Trust between the controller and its hosts: join tokens (made by an
admin), joins (a token and a CSR in, a Host row and a certificate out) and
renewals (a host's current certificate in, the next one out).

The CA's key is used here and nowhere else in the API; the routes are in
`api.http.join_tokens` (admin) and `api.http.control` (the control listener).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from astara import pki
from astara.agent.listen import parse_advertise, url_host
from astara.api.admin import require_admin
from astara.api.auth import Caller
from astara.api.changes import timestamp
from astara.api.errors import NeutronError
from astara.db.models import Host, JoinToken, RevokedCertificate
from astara.model.fabric import check_ifname

TTL_DEFAULT_S = 3600
TTL_MIN_S = 60
TTL_MAX_S = 86400
_ALPHABET = string.ascii_lowercase + string.digits
_PHYSNET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_ZONE = 255


@dataclass(frozen=True)
class Authority:
    """What joins and renewals sign with: the CA, and how long an agent's
    certificate lives."""

    ca: pki.CA
    agent_lifetime: timedelta = pki.AGENT_LIFETIME

    @property
    def ca_hash(self) -> str:
        return pki.ca_hash(self.ca.cert)


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def create_join_token(
    session: Session, caller: Caller, body: Any, now: datetime, ca_hash: str
) -> dict[str, Any]:
    """A one-time token, valid `ttl_s` seconds; only its secret's digest is kept."""
    require_admin(caller)
    if body is None:
        body = {}
    if not isinstance(body, dict) or set(body) - {"ttl_s"}:
        raise NeutronError(400, "HTTPBadRequest", 'Body must be {"ttl_s": SECONDS}')
    ttl_s = body.get("ttl_s", TTL_DEFAULT_S)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not TTL_MIN_S <= ttl_s <= TTL_MAX_S:
        raise NeutronError(
            400,
            "HTTPBadRequest",
            f"Invalid input for ttl_s. Reason: an integer from {TTL_MIN_S} to {TTL_MAX_S}.",
        )
    token_id = _random(pki.TOKEN_ID_LENGTH)
    while session.get(JoinToken, token_id) is not None:
        token_id = _random(pki.TOKEN_ID_LENGTH)
    secret = _random(pki.TOKEN_SECRET_LENGTH)
    expires_at = now + timedelta(seconds=ttl_s)
    session.add(
        JoinToken(
            id=token_id,
            secret_sha256=pki.secret_digest(secret),
            expires_at=expires_at,
            created_at=now,
        )
    )
    return {"token": f"{token_id}.{secret}.{ca_hash}", "expires_at": timestamp(expires_at)}


def _bad_token() -> NeutronError:
    # One answer for every way a token fails: a caller learns nothing.
    return NeutronError(401, "InvalidJoinToken", "The join token is unknown, expired or used.")


def _bad(field: str, reason: str) -> NeutronError:
    return NeutronError(400, "HTTPBadRequest", f"Invalid input for {field}. Reason: {reason}")


@dataclass(frozen=True)
class JoinRequest:
    name: str
    csr: Any  # x509.CertificateSigningRequest
    advertise: tuple[str, int]
    underlay_address: str | None
    physnets: dict[str, str]
    availability_zone: str
    version: str


def _join_request(body: dict[str, Any]) -> JoinRequest:
    """The join body's fields, checked (400 on the first wrong one)."""
    known = {
        "token",
        "csr_pem",
        "name",
        "advertise",
        "underlay_address",
        "physnets",
        "availability_zone",
        "version",
    }
    if set(body) - known:
        raise _bad(", ".join(sorted(set(body) - known)), "unknown field")
    try:
        name = pki.check_host_name(body.get("name"))  # type: ignore[arg-type]
    except ValueError as error:
        raise _bad("name", str(error)) from None
    if not isinstance(body.get("csr_pem"), str):
        raise _bad("csr_pem", "a PEM certificate request is required")
    try:
        csr = pki.load_csr(body["csr_pem"])
    except pki.InvalidCertificate as error:
        raise _bad("csr_pem", str(error)) from None
    advertise = body.get("advertise")
    try:
        where = parse_advertise(advertise) if isinstance(advertise, str) else None
    except ValueError as error:
        raise _bad("advertise", str(error)) from None
    if where is None:
        raise _bad("advertise", "ADDR:PORT is required")
    underlay = body.get("underlay_address")
    if underlay is not None:
        try:
            underlay = str(ipaddress.ip_address(underlay))
        except ValueError:
            raise _bad("underlay_address", "an IP address") from None
    physnets = body.get("physnets") or {}
    if not isinstance(physnets, dict):
        raise _bad("physnets", "an object {PHYSNET: INTERFACE}")
    for physnet, interface in physnets.items():
        if not _PHYSNET.fullmatch(physnet):
            raise _bad("physnets", f"{physnet!r} is not a physnet name")
        try:
            check_ifname(interface if isinstance(interface, str) else "")
        except ValueError as error:
            raise _bad("physnets", f"{physnet}: {error}") from None
    zone = body.get("availability_zone") or "nova"
    if not isinstance(zone, str) or len(zone) > _MAX_ZONE:
        raise _bad("availability_zone", f"a name of at most {_MAX_ZONE} characters")
    version = body.get("version") or ""
    if not isinstance(version, str) or len(version) > 64:
        raise _bad("version", "a string of at most 64 characters")
    return JoinRequest(name, csr, where, underlay, dict(physnets), zone, version)


def _check_token(session: Session, body: Any, now: datetime, ca_hash: str) -> JoinToken:
    token = body.get("token") if isinstance(body, dict) else None
    try:
        parts = pki.parse_join_token(token) if isinstance(token, str) else None
    except ValueError:
        parts = None
    if parts is None:
        raise _bad_token()
    row = session.get(JoinToken, parts.id)
    if (
        row is None
        or not hmac.compare_digest(row.secret_sha256, pki.secret_digest(parts.secret))
        or not hmac.compare_digest(parts.ca_hash, ca_hash)
        or row.used_at is not None
        or row.expires_at <= now
    ):
        raise _bad_token()
    return row


def join(session: Session, body: Any, now: datetime, authority: Authority) -> dict[str, Any]:
    """Consume a join token and create the Host row, in one transaction.
    The token is checked before anything else in the body; it is spent by a
    conditional UPDATE, so of two joins racing with one token one succeeds."""
    row = _check_token(session, body, now, authority.ca_hash)
    request = _join_request(body)
    if session.scalar(select(Host.id).where(Host.name == request.name)) is not None:
        raise NeutronError(409, "HostExists", f"A host named {request.name} has joined already.")
    spent = session.execute(
        update(JoinToken)
        .where(JoinToken.id == row.id, JoinToken.used_at.is_(None), JoinToken.expires_at > now)
        .values(used_at=now, used_by=request.name)
        .execution_options(synchronize_session=False)
    )
    if getattr(spent, "rowcount", 0) != 1:
        raise _bad_token()
    host, port = request.advertise
    cert = pki.issue_for_csr(
        authority.ca, request.csr, "agent", request.name, [host], now, authority.agent_lifetime
    )
    shown = pki.identity(cert)
    session.add(
        Host(
            id=str(uuid.uuid4()),
            name=request.name,
            address=f"https://{url_host(host)}:{port}",
            underlay_address=request.underlay_address,
            physnets=request.physnets,
            availability_zone=request.availability_zone,
            drained=False,
            alive=True,
            reported={"version": request.version} if request.version else {},
            cert_serial=shown.serial,
            cert_not_after=shown.not_after,
            created_at=now,
        )
    )
    session.flush()
    return {
        "name": request.name,
        "certificate_pem": pki.cert_pem(cert),
        "ca_pem": pki.cert_pem(authority.ca.cert),
    }


def check_renewal(session: Session, peer: pki.Identity | None) -> Host:
    """The host whose current certificate `peer` (verified by TLS against
    the CA) is: OU=agent, its serial the host's and not revoked."""
    if peer is None:
        raise NeutronError(401, "CertificateRequired", "Renewal needs the host's certificate.")
    if peer.role != "agent":
        raise NeutronError(403, "Forbidden", "Only a host's certificate can be renewed.")
    host = session.scalar(select(Host).where(Host.name == peer.name))
    if (
        host is None
        or host.cert_serial != peer.serial
        or session.get(RevokedCertificate, peer.serial) is not None
    ):
        raise NeutronError(
            403, "CertificateRevoked", "This certificate is revoked or replaced: join again."
        )
    return host


def renew(
    session: Session, peer: pki.Identity | None, body: Any, now: datetime, authority: Authority
) -> dict[str, Any]:
    """The next certificate of the host `peer` names; its current one is
    recorded revoked (a renewal is a replacement)."""
    host = check_renewal(session, peer)
    assert peer is not None
    keys = set(body) if isinstance(body, dict) else None
    if keys != {"csr_pem"} or not isinstance(body["csr_pem"], str):
        raise NeutronError(400, "HTTPBadRequest", 'Body must be {"csr_pem": PEM}')
    try:
        csr = pki.load_csr(body["csr_pem"])
    except pki.InvalidCertificate as error:
        raise _bad("csr_pem", str(error)) from None
    advertised = host.address.removeprefix("https://")
    address, _ = parse_advertise(advertised)
    cert = pki.issue_for_csr(
        authority.ca, csr, "agent", host.name, [address], now, authority.agent_lifetime
    )
    shown = pki.identity(cert)
    replaced = session.execute(
        update(Host)
        .where(Host.id == host.id, Host.cert_serial == peer.serial)
        .values(cert_serial=shown.serial, cert_not_after=shown.not_after)
        .execution_options(synchronize_session=False)
    )
    if getattr(replaced, "rowcount", 0) != 1:
        raise NeutronError(409, "Conflict", "The certificate was renewed meanwhile.")
    session.add(
        RevokedCertificate(
            serial=peer.serial, host_name=host.name, revoked_at=now, not_after=peer.not_after
        )
    )
    return {"certificate_pem": pki.cert_pem(cert), "ca_pem": pki.cert_pem(authority.ca.cert)}
