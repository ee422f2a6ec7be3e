"""Mutual TLS for the agent API and the control listener: server and client
SSL contexts from the deployment's files, and a uvicorn protocol that sees
each connection's peer certificate (uvicorn does not put it in the ASGI
scope), refuses the wrong peers before any route runs, and hands the
certificate to the app in the scope under PEER_CERT_KEY.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from astara import pki

log = logging.getLogger(__name__)

# Where the protocol leaves the peer's certificate (DER bytes, or None) in
# the ASGI scope of every request on the connection.
PEER_CERT_KEY = "astara.peer_cert"


@dataclass(frozen=True)
class ClientTLS:
    """A client's side of mutual TLS: the CA it trusts, and its own
    certificate and key. `server_name`: the name the server's certificate must
    carry, when it is not the host in the URL (the control listener's)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """Verifies the server against the CA alone (not the system's roots) and
    checks its name; presents the client certificate if there is one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None:
        context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key is not None else None)
    return context


def server_context(cert: Path, key: Path, ca: Path, *, require_client: bool) -> ssl.SSLContext:
    """A server's context: its certificate, clients verified against `ca`
    (required, or optional: a client may come without one, but one that does
    not verify fails the handshake). `load_cert_chain` on the same object
    later changes the certificate of new handshakes (renewal)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(cafile=str(ca))
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return context


def only_role(role: str) -> Callable[[bytes | None], str | None]:
    """A peer check admitting only certificates of `role` (OU)."""

    def refusal(der: bytes | None) -> str | None:
        if der is None:
            return "a client certificate is required"
        try:
            shown = pki.identity(pki.load_der_cert(der))
        except pki.InvalidCertificate:
            return "the client certificate cannot be read"
        if shown.role != role:
            return (
                f"only OU={role} certificates may use this API"
                f" (this one is OU={shown.role}, CN={shown.name})"
            )
        return None

    return refusal


def _refusal_app(reason: str) -> Any:
    body = json.dumps({"detail": {"kind": "forbidden", "message": reason}}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _with_peer(app: Any, der: bytes | None, contact: Callable[[], None] | None) -> Any:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, PEER_CERT_KEY: der}
            if contact is not None:
                contact()
        await app(scope, receive, send)

    return wrapped


def peer_protocol(
    refusal: Callable[[bytes | None], str | None] | None = None,
    contact: Callable[[], None] | None = None,
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, reading the peer's certificate once the TLS
    handshake is done (asyncio makes the connection only then): a refused
    peer's requests all get a 403 instead of a route; an admitted one's carry
    the certificate in their scope, and each calls `contact()`."""

    class TlsPeerProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            reason = refusal(der) if refusal is not None else None
            if reason is not None:
                log.warning("refused a connection from %s: %s", self.client, reason)
                self.app = _refusal_app(reason)
            else:
                self.app = _with_peer(self.app, der, contact)

    return TlsPeerProtocol


# The agent's event loop: asyncio's own, whatever else is installed (uvloop
# is, for the tenant API): the agent's protocols read each peer's
# certificate from asyncio's TLS transport, and its watch and children were
# written and tested against asyncio.
AGENT_LOOP = "asyncio"


def tls_server(
    app: Any,
    context: ssl.SSLContext,
    protocol: type[asyncio.Protocol],
    log_level: str = "info",
) -> uvicorn.Server:
    """A uvicorn server for `app` serving `context` (this very object, so a
    renewal's `load_cert_chain` on it takes effect): run it with
    `.run(sockets=[bound_socket(...)])`."""
    config = uvicorn.Config(app, http=protocol, loop=AGENT_LOOP, log_level=log_level)
    config.load()
    config.ssl = context
    return uvicorn.Server(config)


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on HOST:PORT (IPv4 or IPv6), bound now so a
    busy port is a clear error at start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except BaseException:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener
