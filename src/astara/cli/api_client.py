"""How every `astara` command finds the server and its credential: `--url` /
`--token`, else `ASTARA_URL` / `ASTARA_TOKEN`, else the state dir's
`admin-token` and `clouds.yaml` (`--state-dir`, `ASTARA_STATE_DIR`, `./var`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def resolve(url: str | None, token: str | None, state_dir: Path | None) -> Target:
    url = url or os.environ.get("ASTARA_URL")
    token = token or os.environ.get("ASTARA_TOKEN")
    folder = state_dir or Path(os.environ.get("ASTARA_STATE_DIR", "var"))
    if token is None and (folder / "admin-token").exists():
        token = (folder / "admin-token").read_text().strip()
    if url is None and (folder / "clouds.yaml").exists():
        found = re.search(r"endpoint:\s*(\S+)", (folder / "clouds.yaml").read_text())
        url = found.group(1) if found else None
    if not url or not token:
        raise ApiError(
            0,
            f"no server or credential: give --url and --token, set ASTARA_URL and ASTARA_TOKEN,"
            f" or point --state-dir at a running server's state dir (tried {folder})",
        )
    return Target(url.rstrip("/"), token)


def request(target: Target, method: str, path: str, body: Any = None) -> Any:
    try:
        response = httpx.request(
            method,
            f"{target.url}{path}",
            json=body,
            headers={"X-Auth-Token": target.token},
            timeout=30,
        )
    except httpx.TransportError as error:
        raise ApiError(0, f"cannot reach {target.url}: {error}") from error
    if response.status_code >= 400:
        try:
            message = response.json()["NeutronError"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise ApiError(response.status_code, message)
    return response.json() if response.content else None
