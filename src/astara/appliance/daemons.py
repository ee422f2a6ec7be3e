"""The appliance's daemons: dnsmasq (DHCP) and radvd (router advertisements).

Each is started only when its config has content, restarted only when its
main config changed (or it died), and otherwise told to reload with SIGHUP:
a change of DHCP hosts rewrites dnsmasq's host file and keeps its PID.
"""

from __future__ import annotations

import signal
from pathlib import Path

from astara.appliance.render import Rendered
from astara.linux.files import write_atomic
from astara.linux.process import Daemon


class ApplianceDaemons:
    def __init__(self, netns: str, directory: Path) -> None:
        self.directory = directory
        self.dnsmasq = Daemon(netns, directory / "dnsmasq.pid", str(directory / "dnsmasq.conf"))
        self.radvd = Daemon(netns, directory / "radvd.pid", str(directory / "radvd.conf"))

    def all(self) -> dict[str, Daemon]:
        return {"dnsmasq": self.dnsmasq, "radvd": self.radvd}

    def converge(self, rendered: Rendered) -> list[str]:
        """Make the daemons run the rendered configs; returns what was done."""
        return self._dnsmasq(rendered) + self._radvd(rendered)

    def stop(self) -> None:
        for daemon in self.all().values():
            daemon.stop()

    def _dnsmasq(self, rendered: Rendered) -> list[str]:
        conf, hosts = self.directory / "dnsmasq.conf", self.directory / "dnsmasq.hosts"
        if not rendered.dnsmasq.enabled:
            conf.unlink(missing_ok=True)
            hosts.unlink(missing_ok=True)
            return self._stopped(self.dnsmasq, "dnsmasq")
        conf_changed = _write_if_changed(conf, rendered.dnsmasq.conf)
        hosts_changed = _write_if_changed(hosts, rendered.dnsmasq.hosts)
        if conf_changed or self.dnsmasq.pid() is None:
            self.dnsmasq.stop()
            self.dnsmasq.start(["dnsmasq", f"--conf-file={conf}"])
            return ["dnsmasq started"]
        if hosts_changed:
            self.dnsmasq.signal(signal.SIGHUP)  # re-reads dhcp-hostsfile
            return ["dnsmasq reloaded hosts"]
        return []

    def _radvd(self, rendered: Rendered) -> list[str]:
        conf = self.directory / "radvd.conf"
        if not rendered.radvd:
            conf.unlink(missing_ok=True)
            return self._stopped(self.radvd, "radvd")
        changed = _write_if_changed(conf, rendered.radvd)
        if self.radvd.pid() is None:
            log = self.directory / "radvd.log"
            pidfile = self.directory / "radvd.pid"
            self.radvd.start(
                ["radvd", "-C", str(conf), "-p", str(pidfile), "-m", "logfile", "-l", str(log)]
            )
            return ["radvd started"]
        if changed:
            self.radvd.signal(signal.SIGHUP)
            return ["radvd reloaded"]
        return []

    @staticmethod
    def _stopped(daemon: Daemon, name: str) -> list[str]:
        if daemon.pid() is None:
            return []
        daemon.stop()
        return [f"{name} stopped"]


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, text)
    return True
