"""A stand-in for Nova's metadata API, on loopback: what tests (and demos)
point an agent's `--metadata-url` at, since Astara ships no Nova.

It checks what a real Nova checks of a request from Neutron's proxy: the
`X-Instance-ID-Signature` (HMAC-SHA256 of `X-Instance-ID` with the shared
secret; 403 "Invalid proxy request signature." otherwise), an instance it
knows, of the project `X-Tenant-ID` names (404 otherwise); then it answers
for that instance: `/latest/meta-data/` lists its keys, each key its value
(`local-ipv4` is `X-Forwarded-For`). Every request is kept, for tests to
look at what the backend was told.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

META_DATA = "/latest/meta-data/"


@dataclass(frozen=True)
class Instance:
    project_id: str
    hostname: str


@dataclass
class MetadataBackend:
    secret: bytes
    instances: dict[str, Instance]
    seen: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, text = backend.answer(self.path, dict(self.headers.items()))
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, str]:
        self.seen.append({"path": path, **{k.lower(): v for k, v in headers.items()}})
        instance_id = headers.get("X-Instance-ID", "")
        expected = hmac.new(self.secret, instance_id.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("X-Instance-ID-Signature", ""), expected):
            return 403, "Invalid proxy request signature.\n"
        instance = self.instances.get(instance_id)
        if instance is None or instance.project_id != headers.get("X-Tenant-ID"):
            return 404, "Not found.\n"
        values = {
            "instance-id": instance_id,
            "hostname": instance.hostname,
            "local-ipv4": headers.get("X-Forwarded-For", ""),
        }
        if path == META_DATA:
            return 200, "\n".join(values) + "\n"
        key = path.removeprefix(META_DATA)
        if path.startswith(META_DATA) and key in values:
            return 200, values[key]
        return 404, "Not found.\n"

    def __enter__(self) -> MetadataBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
