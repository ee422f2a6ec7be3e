"""Who may talk to the agent on its unix socket: root, or members of the
operators' group.

The agent runs as root and its API plugs veths into tenant bridges and deletes
appliances, so its socket is two locks deep: the file's mode (0600 root, or
0660 root:operators), set when the socket is bound so it is never wider, and
a check of every connection's peer with SO_PEERCRED, so a socket made
reachable by mistake (a chmod, a bind mount) still answers only them.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class UnknownGroup(ValueError):
    """The operators' group named on the command line does not exist."""


def parse_group(value: str) -> int:
    """A group given as a name (looked up) or a bare numeric gid (taken as is,
    so a group need not be in /etc/group)."""
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError as error:
        raise UnknownGroup(f"no group named {value!r}") from error


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel saw it."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]  # supplementary groups


@dataclass(frozen=True)
class AccessPolicy:
    operators_gid: int | None = None

    @property
    def socket_mode(self) -> int:
        return 0o600 if self.operators_gid is None else 0o660

    def refusal(self, peer: Peer | None) -> str | None:
        """Why `peer` may not use the agent, or None if it may. An unknown
        peer (its credentials could not be read) is refused."""
        if peer is None:
            return "the peer's credentials could not be read"
        if peer.uid == 0:
            return None
        if self.operators_gid is not None and self.operators_gid in peer.groups | {peer.gid}:
            return None
        allowed = (
            "root"
            if self.operators_gid is None
            else f"root or members of the operators' group (gid {self.operators_gid})"
        )
        return f"uid {peer.uid} (pid {peer.pid}) may not use this agent: only {allowed} may"


def bind_unix_socket(path: Path, policy: AccessPolicy) -> socket.socket:
    """A listening unix socket at `path`, created with the policy's mode and
    group. The umask is set around bind(2), which creates the file: a chmod
    afterwards would leave a moment when any user could connect. Call it before
    any thread starts (the umask is the process's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o777 & ~policy.socket_mode)
    try:
        listener.bind(str(path))
    except BaseException:
        listener.close()
        raise
    finally:
        os.umask(previous)
    if policy.operators_gid is not None:
        # Until this chown the group is root's: no wider than asked.
        os.chown(path, 0, policy.operators_gid)
    listener.listen(2048)
    return listener


def _status_ids(status: str, key: str) -> list[int]:
    for line in status.splitlines():
        name, _, values = line.partition(":")
        if name == key:
            return [int(v) for v in values.split()]
    return []


def read_peer(connection: Any) -> Peer | None:
    """The peer of a unix-socket connection (SO_PEERCRED for its pid, uid and
    gid; /proc/PID/status for its supplementary groups), or None if unknown."""
    try:
        pid, uid, gid = _UCRED.unpack(
            connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, struct.error):
        return None
    # The pid is the kernel's, the groups are read afterwards: if the process
    # is gone and its pid reused, the effective uid is unlikely to match too,
    # and then the peer counts as unknown (refused) rather than as another.
    uids = _status_ids(status, "Uid")
    if len(uids) < 2 or uids[1] != uid:
        return None
    return Peer(pid=pid, uid=uid, gid=gid, groups=frozenset(_status_ids(status, "Groups")))


def _refusal_app(reason: str) -> Any:
    """An ASGI app answering every request 403 with `reason`."""
    body = json.dumps({"detail": {"kind": "forbidden", "message": reason}}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def peer_checked_protocol(policy: AccessPolicy) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, checking each connection's peer when it is
    made: a refused peer's requests all get the 403 app instead of the agent's,
    so none of them reaches a route."""

    class PeerCheckedProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            connection = transport.get_extra_info("socket")
            peer = read_peer(connection) if connection is not None else None
            reason = policy.refusal(peer)
            if reason is not None:
                log.warning("refused a connection: %s", reason)
                self.app = _refusal_app(reason)

    return PeerCheckedProtocol
