"""The appliance's daemons, dnsmasq (DHCP), radvd (router advertisements),
haproxy (the metadata proxy, a load balancer), keepalived and conntrackd
(an HA router member): which should run, what they run now, and starting,
reloading or stopping them as planned.

Which of these to do is decided in `appliance.plan` (`plan_daemons`); this
module only reads their state and carries the decisions out.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from pathlib import Path

from astara.appliance import lbreload
from astara.appliance.actions import DAEMON_FILES, DaemonFile, DaemonName
from astara.appliance.plan import DaemonObserved
from astara.appliance.render import expected_daemons
from astara.appliance.schema import ApplianceConfig
from astara.linux.files import write_atomic
from astara.linux.process import Daemon
from astara.linux.run import find_tool

# haproxy expands "${NAME}" in its config from its environment: it gets none
# of the agent's (a join token, an operator's credentials), only a PATH.
CLEAN_ENV = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
# How long conntrackd has to make its control socket once started.
READY_TIMEOUT_S = 30.0


class ApplianceDaemons:
    """`metadata`: whether this host serves metadata (its agent has a backend)."""

    def __init__(
        self,
        netns: str,
        directory: Path,
        metadata: bool = False,
        held: frozenset[DaemonName] = frozenset(),
        sockets: Path | None = None,
    ) -> None:
        """`held`: daemons kept stopped whatever the config (an HA member's
        keepalived while the member is out of the election)."""
        self.directory = directory
        self.metadata = metadata
        self.held = held
        self.sockets = sockets or directory  # see render.ha.conntrackd_socket
        self.dnsmasq = Daemon(netns, directory / "dnsmasq.pid", str(directory / "dnsmasq.conf"))
        self.radvd = Daemon(netns, directory / "radvd.pid", str(directory / "radvd.conf"))
        self.haproxy = Daemon(netns, directory / "haproxy.pid", str(directory / "haproxy.cfg"))
        self.loadbalancer = Daemon(
            netns, directory / "loadbalancer.pid", str(directory / "loadbalancer.cfg")
        )
        self.conntrackd = Daemon(
            netns, directory / "conntrackd.pid", str(directory / "conntrackd.conf")
        )
        self.keepalived = Daemon(
            netns, directory / "keepalived.pid", str(directory / "keepalived.conf")
        )

    def all(self) -> dict[str, Daemon]:
        return {
            "dnsmasq": self.dnsmasq,
            "radvd": self.radvd,
            "haproxy": self.haproxy,
            "loadbalancer": self.loadbalancer,
            "conntrackd": self.conntrackd,
            "keepalived": self.keepalived,
        }

    def expected(self, config: ApplianceConfig) -> dict[DaemonName, bool]:
        """Which daemons `config` runs here (none of those held)."""
        expected = expected_daemons(config, self.metadata)
        return {name: running and name not in self.held for name, running in expected.items()}

    def observe(self) -> dict[DaemonName, DaemonObserved]:
        """Whether each runs, and its files' contents (those present)."""
        observed = {}
        for name in DaemonName:
            files = {}
            for file_name in DAEMON_FILES[name]:
                with contextlib.suppress(FileNotFoundError):
                    files[file_name] = (self.directory / file_name).read_text()
            observed[name] = DaemonObserved(
                running=self._daemon(name).pid() is not None, files=files
            )
        return observed

    def start(self, name: DaemonName, files: tuple[DaemonFile, ...], fresh: bool = False) -> None:
        """Write `files`, stop the daemon if it runs, start it. `fresh`: the
        namespace was made just now (see `Daemon.start`)."""
        self._write(files)
        daemon = self._daemon(name)
        daemon.stop()
        if name is DaemonName.dnsmasq:
            daemon.start(["dnsmasq", f"--conf-file={self.directory / 'dnsmasq.conf'}"], fresh=fresh)
        elif name is DaemonName.haproxy:
            conf = self.directory / "haproxy.cfg"
            daemon.start(
                [*CLEAN_ENV, "haproxy", "-D", "-p", str(daemon.pidfile), "-f", str(conf)],
                fresh=fresh,
            )
        elif name is DaemonName.loadbalancer:
            # Master-worker: a reload (SIGUSR2) forks a new worker that takes
            # over the listening sockets; the old one finishes its connections.
            conf = self.directory / "loadbalancer.cfg"
            master = f"{self.directory / 'master.sock'},mode,600"
            daemon.start(
                [
                    *CLEAN_ENV,
                    "haproxy",
                    "-W",
                    "-S",
                    master,
                    "-D",
                    "-p",
                    str(daemon.pidfile),
                    "-f",
                    str(conf),
                ],
                fresh=fresh,
            )
            lbreload.wait_serving(self.directory / "master.sock", self.directory / "stats.sock")
        elif name is DaemonName.keepalived:
            # VRRP only (-P); its VRRP child's pid file beside the parent's.
            # No syslog here: its role changes reach the agent on its FIFO.
            # keepalived refuses to start while a pid file names a process
            # that exists: a child killed with it may not be reaped yet.
            conf = self.directory / "keepalived.conf"
            (self.directory / "keepalived-vrrp.pid").unlink(missing_ok=True)
            daemon.start(
                [
                    *CLEAN_ENV,
                    "keepalived",
                    "-P",
                    "-G",
                    "-f",
                    str(conf),
                    "-p",
                    str(daemon.pidfile),
                    "-r",
                    str(self.directory / "keepalived-vrrp.pid"),
                ],
                fresh=fresh,
            )
        elif name is DaemonName.conntrackd:
            # It does not daemonize with a pid file of its own: start-stop-daemon
            # forks it and writes one. A lock or socket left by one killed
            # would stop it from starting.
            conf = self.directory / "conntrackd.conf"
            (self.directory / "conntrackd.lock").unlink(missing_ok=True)
            socket = _conntrackd_socket(conf.read_text())
            if socket is not None:
                Path(socket).unlink(missing_ok=True)
            self.sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
            started = daemon.start(
                [
                    *CLEAN_ENV,
                    "start-stop-daemon",
                    "--start",
                    "--background",
                    "--make-pidfile",
                    "--pidfile",
                    str(daemon.pidfile),
                    "--exec",
                    find_tool("conntrackd") or "/usr/sbin/conntrackd",
                    "--",
                    "-C",
                    str(conf),
                ],
                fresh=fresh,
            )
            # Ready once its control socket is there; start-stop-daemon
            # answers before conntrackd has read its config (seconds, on a
            # host making hundreds of members at once). Given up on early
            # only if its process is gone.
            deadline = time.monotonic() + READY_TIMEOUT_S
            while socket is not None and not Path(socket).exists():
                if time.monotonic() > deadline or not _alive(started):
                    log = self.directory / "conntrackd.log"
                    said = log.read_text().strip().splitlines()[-1:] if log.exists() else []
                    daemon.stop()
                    raise RuntimeError(f"conntrackd did not start: {' '.join(said) or 'no log'}")
                time.sleep(0.01)
        else:
            conf, log = self.directory / "radvd.conf", self.directory / "radvd.log"
            daemon.start(
                [
                    "radvd",
                    "-C",
                    str(conf),
                    "-p",
                    str(daemon.pidfile),
                    "-m",
                    "logfile",
                    "-l",
                    str(log),
                ],
                fresh=fresh,
            )

    def reload(self, name: DaemonName, files: tuple[DaemonFile, ...]) -> None:
        """Write `files` and signal: SIGHUP makes dnsmasq re-read its
        dhcp-hostsfile, radvd its config (and set its interfaces up again).
        A load balancer's haproxy master reloads hitlessly, and this returns
        once its new worker serves (`lbreload`)."""
        if name is not DaemonName.loadbalancer:
            self._write(files)
            self._daemon(name).signal(signal.SIGHUP)
            return
        master = self.loadbalancer.pid()
        if master is None:
            raise lbreload.ReloadFailed("haproxy is not running: nothing to reload")
        running = self._read(files)
        self._write(files)
        try:
            lbreload.reload(master, self.directory / "master.sock", self.directory / "stats.sock")
        except lbreload.ReloadFailed:
            # The old worker serves the old config: its files say so again,
            # and the next apply sees the difference and tries once more.
            self._write(running)
            raise

    def remove(self, name: DaemonName) -> None:
        """Stop the daemon if it runs and remove its files."""
        self._daemon(name).stop()
        for file_name in DAEMON_FILES[name]:
            (self.directory / file_name).unlink(missing_ok=True)

    def stop(self) -> None:
        for daemon in self.all().values():
            daemon.stop()

    def _daemon(self, name: DaemonName) -> Daemon:
        return self.all()[name.value]

    def _read(self, files: tuple[DaemonFile, ...]) -> tuple[DaemonFile, ...]:
        """The files of these names as they are now (those present)."""
        found = []
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                found.append(DaemonFile(file.name, (self.directory / file.name).read_text()))
        return tuple(found)

    def _write(self, files: tuple[DaemonFile, ...]) -> None:
        for file in files:
            # Runtime files, rewritten from the config when they differ:
            # not flushed to disk (see write_atomic).
            write_atomic(self.directory / file.name, file.text, durable=False)


def _conntrackd_socket(conf: str) -> str | None:
    """The control socket a conntrackd.conf names (`UNIX { Path ... }`)."""
    found = re.search(r"UNIX \{\s*Path (\S+)", conf)
    return found.group(1) if found else None


def _alive(pid: int) -> bool:
    """Whether the process exists and is no zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")
