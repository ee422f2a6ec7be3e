"""The operator CLI against a live agent."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from astara.linux import cleanup
from astara.testing.agent import AgentProcess, unique_prefix
from astara.testing.lab import Lab
from astara.testing.net import wait_until
from astara.testing.server import Server
from tests.component.test_cli import astara
from tests.root.conftest import build_standard

pytestmark = pytest.mark.root


def test_agent_commands_show_observed_state_and_rendered_config(
    lab: Lab, agent: AgentProcess
) -> None:
    build_standard(lab)
    health = astara("agent", "health", "--agent", agent.listen)
    assert health.returncode == 0 and f'"prefix": "{agent.prefix}"' in health.stdout

    listing = astara("agent", "appliances", "--agent", agent.listen)
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if " r1 " in line)
    assert "active" in row

    rendered = astara("agent", "rendered", "r1", "--agent", agent.listen)
    assert rendered.returncode == 0
    assert "map floating_dnat" in rendered.stdout
    assert "dhcp-range=set:subnet0,10.1.0.0,static" in rendered.stdout

    missing = astara("agent", "rendered", "nope", "--agent", agent.listen)
    assert missing.returncode == 1 and "404" in missing.stdout


def _agents_on(state_dir: Path) -> list[int]:
    """Live `astara-agent` processes on a server's state dir."""
    marker = str(state_dir / "agent").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"astara.agent" in cmdline and marker in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def _serving(tmp_path: Path) -> Iterator[tuple[Server, subprocess.Popen[bytes]]]:
    """`astara serve` in its own process group (as a shell runs a foreground
    command), answering; killed and its objects removed whatever happens."""
    prefix = unique_prefix()
    server = Server(tmp_path / "var", prefix)
    server.state_dir.resolve().mkdir(parents=True)
    with open(server.state_dir / "serve.log", "ab") as log:
        serve = subprocess.Popen(
            server.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def answering() -> bool:
            assert serve.poll() is None, server.log()[-3000:]
            try:
                return httpx.get(server.url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answering, 60, 0.1, "astara serve to answer")
        yield server, serve
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        cleanup.remove_all(prefix)


def test_ctrl_c_stops_serve_and_its_agent_without_a_restart(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group. The
    agent must be stopped by `astara serve`, last, and never restarted as if
    it had crashed while serve shuts down."""
    with _serving(tmp_path) as (server, serve):
        state_dir = server.state_dir.resolve()
        (agent,) = _agents_on(state_dir)
        # A request whose body is still coming holds serve in its graceful
        # shutdown: long enough for a supervisor to restart a dead agent.
        token = (state_dir / "admin-token").read_text().strip()
        body = b'{"netns": "x"}'
        with socket.create_connection(("127.0.0.1", server.port)) as held:
            held.sendall(
                b"PUT /astara/v1/ports/none/binding HTTP/1.1\r\nHost: astara\r\n"
                + f"X-Auth-Token: {token}\r\nContent-Length: {len(body)}\r\n".encode()
                + b"Content-Type: application/json\r\n\r\n"
                + body[:1]
            )
            os.killpg(serve.pid, signal.SIGINT)
            wait_until(lambda: "Waiting for" in server.log(), 30, 0.05, "serve to shut down")
            with pytest.raises(AssertionError, match="timed out"):
                # Any change to the agent is wrong here; none within five
                # supervisor intervals is taken as none at all.
                wait_until(lambda: _agents_on(state_dir) != [agent], 5, 0.05, "the agent to change")
            held.sendall(body[1:])
            assert serve.wait(timeout=60) == 0, server.log()[-3000:]
    assert _agents_on(state_dir) == []
    assert "starting it again" not in server.log()
    assert (state_dir / "agent.pid").read_text() == str(agent)


def test_sigterm_stops_serve_after_it_has_stopped_its_agent(tmp_path: Path) -> None:
    """A supervisor stops `astara serve` with SIGTERM to its process alone:
    serve ends its API gracefully, then stops what it started (the local
    agent, last) and exits 0, rather than dying of the signal with its
    cleanup undone."""
    with _serving(tmp_path) as (server, serve):
        state_dir = server.state_dir.resolve()
        (agent,) = _agents_on(state_dir)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, server.log()[-3000:]
    assert _agents_on(state_dir) == []
    assert "starting it again" not in server.log()
    assert (state_dir / "agent.pid").read_text() == str(agent)
