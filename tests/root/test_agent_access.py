"""Only root and the operators' group may use the agent's unix socket.

Two locks, each tested on its own: the socket file's mode (an unprivileged
process cannot even connect), and the peer check on every connection (with
the socket opened to everyone by a chmod, an unprivileged process connects
and is answered 403, and nothing changes)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.agent.client import AgentClient
from astara.linux import cleanup, netns
from astara.naming import Names
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.server import Server
from tests.root.conftest import running_agent

pytestmark = pytest.mark.root

NOBODY = "65534"
OPERATORS_GID = "47113"  # a bare gid, in no /etc/group: groups come from the kernel


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A state dir an unprivileged process can traverse (pytest's are 0700),
    so that only the socket's own mode and the peer check keep it out."""
    path = Path(tempfile.mkdtemp(prefix="astara-access-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def root_only(open_dir: Path) -> Iterator[AgentProcess]:
    yield from running_agent(open_dir)


@pytest.fixture
def with_operators(open_dir: Path) -> Iterator[AgentProcess]:
    yield from running_agent(open_dir, OPERATORS_GID)


def _curl_as(
    agent: AgentProcess, groups: list[str], method: str, path: str, body: object = None
) -> tuple[int, int, str]:
    """(curl's exit code, HTTP status, body) of a request made by uid/gid 65534
    with exactly the supplementary `groups`."""
    identity = ["--groups", ",".join(groups)] if groups else ["--clear-groups"]
    data = ["-H", "content-type: application/json", "-d", json.dumps(body)] if body else []
    result = subprocess.run(
        [
            *("setpriv", "--reuid", NOBODY, "--regid", NOBODY, *identity),
            *("curl", "-s", "-S", "-X", method, "--unix-socket", str(agent.socket)),
            *(*data, "-w", "\n%{http_code}", f"http://agent{path}"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text, _, code = result.stdout.rpartition("\n")
    return result.returncode, int(code or 0), text


def _client(agent: AgentProcess) -> AgentClient:
    assert agent.client is not None
    return agent.client


def test_socket_is_root_only_from_its_creation(root_only: AgentProcess) -> None:
    mode = root_only.socket.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600 and (mode.st_uid, mode.st_gid) == (0, 0)
    exit_code, status, _ = _curl_as(root_only, [], "PUT", "/v1/networks/n1", {"mtu": 1500})
    assert exit_code == 7 and status == 0  # curl: could not connect (EACCES)
    assert _client(root_only).networks(observe=False) == []


def test_peer_check_refuses_an_unprivileged_process_that_can_connect(
    root_only: AgentProcess,
) -> None:
    # As if the socket had been opened up by mistake: now only the peer check stands.
    os.chmod(root_only.socket, 0o666)
    exit_code, status, body = _curl_as(root_only, [], "PUT", "/v1/networks/n1", {"mtu": 1500})
    assert (exit_code, status) == (0, 403)
    detail = json.loads(body)["detail"]
    assert detail["kind"] == "forbidden"
    assert "uid 65534" in detail["message"] and "only root may" in detail["message"]
    assert _client(root_only).networks(observe=False) == []
    assert not netns.exists(Names(root_only.prefix).fabric_netns)

    # Reads are refused too: the appliances' configs are the tenants'.
    assert _curl_as(root_only, [], "GET", "/v1/health")[1] == 403
    # Root is still served.
    assert _client(root_only).put_network("n1")["present"] is True


def test_operators_group_may_use_the_socket_others_may_not(
    with_operators: AgentProcess,
) -> None:
    mode = with_operators.socket.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o660
    assert (mode.st_uid, mode.st_gid) == (0, int(OPERATORS_GID))

    # Not in the group: the file's mode keeps it out.
    exit_code, _, _ = _curl_as(with_operators, [], "PUT", "/v1/networks/n1", {"mtu": 1500})
    assert exit_code == 7
    assert _client(with_operators).networks(observe=False) == []

    # In the group (a supplementary one, uid 65534): admitted by the peer check.
    exit_code, status, body = _curl_as(
        with_operators, [OPERATORS_GID], "PUT", "/v1/networks/n1", {"mtu": 1500}
    )
    assert (exit_code, status) == (0, 201), body
    assert json.loads(body)["present"] is True
    assert [n["id"] for n in _client(with_operators).networks(observe=False)] == ["n1"]


def test_peer_check_refuses_outsiders_of_the_operators_group(
    with_operators: AgentProcess,
) -> None:
    os.chmod(with_operators.socket, 0o666)
    exit_code, status, body = _curl_as(
        with_operators, ["47114"], "PUT", "/v1/networks/n1", {"mtu": 1500}
    )
    assert (exit_code, status) == (0, 403)
    assert f"operators' group (gid {OPERATORS_GID})" in json.loads(body)["detail"]["message"]
    assert _client(with_operators).networks(observe=False) == []


def test_serve_passes_the_operators_group_to_its_agent(open_dir: Path) -> None:
    server = Server(open_dir / "var", unique_prefix(), "--operators-group", OPERATORS_GID)
    try:
        server.start()
        sock = server.state_dir / "agent.sock"
        mode = sock.stat()
        assert stat.S_IMODE(mode.st_mode) == 0o660
        assert (mode.st_uid, mode.st_gid) == (0, int(OPERATORS_GID))
        server.state_dir.chmod(0o755)
        result = subprocess.run(
            [
                *("setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--groups", OPERATORS_GID),
                *("curl", "-s", "-S", "--unix-socket", str(sock), "http://agent/v1/health"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["prefix"] == server.prefix
    finally:
        server.stop()
        if server.prefix is not None:
            cleanup.remove_all(server.prefix)
