"""A host's metadata proxy: instances' requests to `http://169.254.169.254/`,
passed on to the metadata backend (Nova's metadata API) with Neutron's
headers, so that the backend knows and trusts who asks.

Each appliance's haproxy (`astara.appliance.render.haproxy`) brings a
request here over a unix socket only root reaches, naming its appliance and
the address the connection came from (whatever the workload sent under
those names is dropped there). The appliance's config in force says which
instance has that address (`metadata_hosts`: its port's `device_id` and
project); the request goes on with `X-Forwarded-For`, `X-Instance-ID`,
`X-Tenant-ID` and `X-Instance-ID-Signature` (HMAC-SHA256 of the instance id
with the shared secret, as Nova checks it). An address no instance has is
answered 404 here, and the backend never hears of it.

The secret is read once from a file only its owner may read (refused
otherwise), kept in this process, and never written to a config, a log or
an answer: only this side signs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import stat
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from astara.appliance.render.haproxy import APPLIANCE_HEADER, MAX_BODY
from astara.appliance.schema import MetadataHost

log = logging.getLogger(__name__)

# What the backend is told of the request beyond Neutron's headers.
_PASSED = ("accept", "content-type", "user-agent")
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]

Lookup = Callable[[str, ipaddress.IPv4Address], MetadataHost | None]


class SecretError(ValueError):
    """The shared secret's file cannot be used (missing, empty, or readable by others)."""


def load_secret(path: Path) -> bytes:
    """The shared secret in `path`, which only its owner may read."""
    try:
        info = path.stat()
        text = path.read_bytes()
    except OSError as error:
        raise SecretError(f"{path}: {error.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{path} must be readable by its owner only (chmod 600)")
    if info.st_uid != os.geteuid():
        raise SecretError(f"{path} must be owned by the user the agent runs as")
    secret = text.strip()
    if not secret:
        raise SecretError(f"{path} is empty")
    return secret


def sign(secret: bytes, instance_id: str) -> str:
    """`X-Instance-ID-Signature`: what Nova's metadata API recomputes."""
    return hmac.new(secret, instance_id.encode(), hashlib.sha256).hexdigest()


class MetadataProxy:
    """The proxy's web app and the server that runs it on `socket_path`, in
    a thread of its own (its event loop apart from the agent API's)."""

    def __init__(self, backend: str, secret: bytes, socket_path: Path, lookup: Lookup) -> None:
        self.backend = backend.rstrip("/")
        self._secret = secret
        self.socket_path = socket_path
        self.lookup = lookup
        self.app = Starlette(
            routes=[Route("/{path:path}", self.proxy, methods=METHODS)], lifespan=self._lifespan
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=30.0) as client:
            self._client = client
            yield

    def __repr__(self) -> str:  # never the secret
        return f"MetadataProxy(backend={self.backend!r}, socket={str(self.socket_path)!r})"

    async def proxy(self, request: Request) -> Response:
        appliance = request.headers.get(APPLIANCE_HEADER, "")
        source = request.headers.get("x-forwarded-for", "")
        try:
            address = ipaddress.IPv4Address(source)
        except ValueError:
            return PlainTextResponse("Not found: no instance has this address.\n", 404)
        host = await asyncio.to_thread(self.lookup, appliance, address)
        if host is None:
            return PlainTextResponse("Not found: no instance has this address.\n", 404)
        body = await _body(request)
        if body is None:
            return PlainTextResponse("Request body too large.\n", 413)
        headers = {
            "X-Forwarded-For": str(host.ip_address),
            "X-Instance-ID": host.instance_id,
            "X-Tenant-ID": host.project_id,
            "X-Instance-ID-Signature": sign(self._secret, host.instance_id),
        }
        headers.update((name, request.headers[name]) for name in _PASSED if name in request.headers)
        url = self.backend + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        assert self._client is not None
        try:
            answer = await self._client.request(
                request.method, url, headers=headers, content=body or None
            )
        except httpx.HTTPError as error:
            log.warning("metadata backend %s: %s", self.backend, type(error).__name__)
            return PlainTextResponse("The metadata backend is unreachable.\n", 502)
        if answer.status_code == 403:
            log.warning(
                "the metadata backend refused instance %s: do the shared secrets match?",
                host.instance_id,
            )
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    # --- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on the socket (root only) and serve in a thread."""
        listener = _bind_private(self.socket_path)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        self._server = server

        def main() -> None:
            try:
                asyncio.run(server.serve(sockets=[listener]))
            finally:
                listener.close()

        self._thread = threading.Thread(target=main, name="metadata-proxy", daemon=True)
        self._thread.start()
        log.info("metadata proxy on %s for %s", self.socket_path, self.backend)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


async def _body(request: Request) -> bytes | None:
    """The request's body, or None past `MAX_BODY` (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def _bind_private(path: Path) -> socket.socket:
    """A listening unix socket only root may connect to: in a directory
    only root may enter (so never reachable by anyone else, even before its
    own mode is set; no umask, which is the process's, shared by threads)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(128)
    listener.setblocking(False)
    return listener
