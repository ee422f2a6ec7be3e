"""The control listener's app: where agents join and renew their
certificates. Served over TLS on a port of its own by `astara serve
--control-listen` (never on the tenant API's port), with the deployment CA
as the trust root for optional client certificates: see `serve_control`."""

from __future__ import annotations

import logging
import ssl
import threading
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from astara import __version__, pki
from astara.agent import tls
from astara.api.errors import NeutronError
from astara.api.http import control
from astara.api.trust import Authority
from astara.db.engine import session_factory

log = logging.getLogger(__name__)


def _detail(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": {"kind": kind, "message": message}})


def create_control_app(engine: Engine, authority: Authority) -> FastAPI:
    app = FastAPI(title="astara control", version=__version__, docs_url=None, redoc_url=None)
    app.state.sessions = session_factory(engine)
    app.state.authority = authority

    @app.exception_handler(NeutronError)
    async def known(_: Request, error: NeutronError) -> JSONResponse:
        return _detail(error.status, error.kind, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return _detail(error.status_code, "http_error", str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.error("unexpected error in a control request", exc_info=error)
        return _detail(500, "internal_error", "internal error; see the server's log")

    app.include_router(control.router)
    return app


def control_context(pki_dir: Path, ca: pki.CA, host: str, now: datetime) -> ssl.SSLContext:
    """The listener's TLS: its server certificate (issued now, see
    `pki.ensure_listener_cert`), client certificates optional, verified by the CA."""
    cert, key = pki.ensure_listener_cert(pki_dir, ca, host, now)
    return tls.server_context(cert, key, pki_dir / "ca.crt", require_client=False)


class ControlListener:
    """The control app served over TLS in a thread of the server's process,
    on a socket bound before it starts (so a busy port fails the start)."""

    def __init__(
        self,
        engine: Engine,
        authority: Authority,
        context: ssl.SSLContext,
        host: str,
        port: int,
        log_level: str = "info",
    ) -> None:
        self.socket = tls.bound_socket(host, port)
        self.server = tls.tls_server(
            create_control_app(engine, authority), context, tls.peer_protocol(), log_level
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="control", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 10) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.socket.close()
