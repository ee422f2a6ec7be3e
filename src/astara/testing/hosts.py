"""Many hosts on one machine, for the end-to-end tests and benchmarks of a
multi-host deployment.

Every object is named under one lab prefix P (5 characters, so that each
host's agent prefix P + one character still fits astara.naming's 6):

    P-wire      two bridges: Pbu (the underlay) and Pbp (the provider network)
    P-ctl       the controller: Pul 192.0.2.1/24 on the underlay
    P-h1..P-hN  the hosts: Pul 192.0.2.1X/24 on the underlay (X = the host's
                index: h1 = .11, h2 = .12, ...), and Pup on the provider
                bridge with no address (an agent's `--physnet public=Pup`)
    P-outside   "the internet": Pup 198.51.100.1/24 and 2001:db8:ff::1/64 on
                the provider bridge

Addresses are documentation ranges only: 192.0.2.0/24 (TEST-NET-1) is the
underlay, 198.51.100.0/24 (TEST-NET-2) and 2001:db8:ff::/64 the provider
network. Nothing is connected to the root namespace: no link, route or
firewall rule is made there, and no packet leaves the lab's namespaces. The
wire side of each host's veths is in P-wire, so a host can be cut off there.

Host hN's agent gets the prefix `P` + N (`agent_prefix`): its fabric,
appliance and workload namespaces are `<agent_prefix>-...`, and `kill_host`
removes them with the host. Tests that plug workloads on a host should name
their namespaces under that host's agent prefix too.

Everything is removed when the lab closes, however the block ends (an error,
KeyboardInterrupt, SystemExit).

`netns_client` talks HTTP from inside a namespace (the controller's API at
192.0.2.1 from a test running in the root namespace), and `run_cli` runs a
program (the real `openstack` or `astara` CLI) inside one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import queue
import secrets
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

import httpx
from pyroute2 import netns as _pyroute2_netns

from astara.linux import cleanup, garp, netns
from astara.linux.run import in_netns, run

T = TypeVar("T")

UNDERLAY_PREFIXLEN = 24
CONTROLLER_ADDRESS = "192.0.2.1"
OUTSIDE = "198.51.100.1"
OUTSIDE_V6 = "2001:db8:ff::1"
PROVIDER_PREFIXLEN = 24
PROVIDER_V6_PREFIXLEN = 64
PHYSNET = "public"
# Host indexes are one character of the agent prefix.
INDEX_CHARACTERS = string.digits[1:] + string.ascii_lowercase
MAX_HOSTS = len(INDEX_CHARACTERS)

_QUIET_IPV6 = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}


def unique_lab_prefix(lead: str = "m") -> str:
    """A fresh 5-character prefix: room for one more character per host."""
    alphabet = string.ascii_lowercase + string.digits
    return lead + "".join(secrets.choice(alphabet) for _ in range(5 - len(lead)))


def underlay_address(index: int) -> str:
    """Host hN's underlay address: 192.0.2.(10 + N)."""
    return f"192.0.2.{10 + index}"


@dataclass(frozen=True)
class LabHost:
    """One simulated host: a namespace on the underlay and the provider network."""

    name: str  # "h1"
    index: int  # 1
    netns: str  # "<P>-h1"
    agent_prefix: str  # "<P>1": the prefix of the agent running on this host
    underlay_address: str  # "192.0.2.11"
    underlay_ifname: str  # in `netns`, carries underlay_address
    uplink_ifname: str  # in `netns`, no address: the physnet's interface
    wire_underlay_ifname: str  # the other end, in the wire namespace
    wire_uplink_ifname: str

    @property
    def physnet(self) -> str:
        """The agent's `--physnet` argument."""
        return f"{PHYSNET}={self.uplink_ifname}"

    def owns_netns(self, name: str) -> bool:
        """Whether a namespace belongs to this host (dies with it)."""
        return name == self.netns or name.startswith(f"{self.agent_prefix}-")


class MultiHostLab:
    """Wire, controller, hosts h1..hN and the outside, under one prefix.

    Use as a context manager (or call `start` and `close`)."""

    def __init__(self, hosts: int = 3, prefix: str | None = None) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"a lab has 1 to {MAX_HOSTS} hosts, not {hosts}")
        self.prefix = prefix or unique_lab_prefix()
        if not (1 <= len(self.prefix) <= 5 and self.prefix.isalnum() and self.prefix.islower()):
            raise ValueError(f"lab prefix {self.prefix!r}: 1-5 characters of [a-z0-9]")
        if not self.prefix[0].isalpha():
            raise ValueError(f"lab prefix {self.prefix!r} must start with a letter")
        self.wire_netns = f"{self.prefix}-wire"
        self.controller_netns = f"{self.prefix}-ctl"
        self.outside_netns = f"{self.prefix}-outside"
        self.controller_address = CONTROLLER_ADDRESS
        self.underlay_bridge = f"{self.prefix}bu"
        self.provider_bridge = f"{self.prefix}bp"
        self.hosts = [self._describe(index) for index in range(1, hosts + 1)]
        self.dead: set[str] = set()
        self._spawned: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._closed = False

    # -- naming ---------------------------------------------------------

    def netns_name(self, name: str) -> str:
        """A namespace name under the lab prefix (removed when the lab closes)."""
        return f"{self.prefix}-{name}"

    def link_name(self, suffix: str) -> str:
        name = f"{self.prefix}{suffix}"
        if len(name) > 15:
            raise ValueError(f"link name {name!r} is longer than 15 characters")
        return name

    def _describe(self, index: int) -> LabHost:
        character = INDEX_CHARACTERS[index - 1]
        return LabHost(
            name=f"h{index}",
            index=index,
            netns=f"{self.prefix}-h{index}",
            agent_prefix=f"{self.prefix}{character}",
            underlay_address=underlay_address(index),
            underlay_ifname=self.link_name("ul"),
            uplink_ifname=self.link_name("up"),
            wire_underlay_ifname=self.link_name(f"u{character}"),
            wire_uplink_ifname=self.link_name(f"p{character}"),
        )

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in this lab ({', '.join(h.name for h in self.hosts)})")

    def agent_prefixes(self) -> list[str]:
        return [host.agent_prefix for host in self.hosts]

    # -- building -------------------------------------------------------

    def start(self) -> MultiHostLab:
        """Build the lab; on any failure (Ctrl-C included) remove what was made."""
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        # No IPv6 at all on the wire: its bridges only forward.
        netns.create(
            self.wire_netns,
            {
                "net.ipv6.conf.all.disable_ipv6": "1",
                "net.ipv6.conf.default.disable_ipv6": "1",
            },
        )
        for bridge in (self.underlay_bridge, self.provider_bridge):
            self._ip(
                self.wire_netns, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0"
            )
            self._ip(self.wire_netns, "link", "set", bridge, "up")

        netns.create(self.controller_netns, _QUIET_IPV6)
        controller_link = self.link_name("ul")
        self._plug(self.controller_netns, controller_link, self.link_name("uctl"), underlay=True)
        self._ip(
            self.controller_netns,
            "addr",
            "add",
            f"{CONTROLLER_ADDRESS}/{UNDERLAY_PREFIXLEN}",
            "dev",
            controller_link,
        )

        netns.create(self.outside_netns, _QUIET_IPV6)
        outside_link = self.link_name("up")
        self._plug(self.outside_netns, outside_link, self.link_name("pout"), underlay=False)
        self._ip(
            self.outside_netns,
            "addr",
            "add",
            f"{OUTSIDE}/{PROVIDER_PREFIXLEN}",
            "dev",
            outside_link,
        )
        self._ip(
            self.outside_netns,
            "addr",
            "add",
            f"{OUTSIDE_V6}/{PROVIDER_V6_PREFIXLEN}",
            "dev",
            outside_link,
            "nodad",
        )

        for host in self.hosts:
            self._build_host(host)

    def _build_host(self, host: LabHost) -> None:
        netns.create(host.netns, _QUIET_IPV6)
        self._plug(host.netns, host.underlay_ifname, host.wire_underlay_ifname, underlay=True)
        self._ip(
            host.netns,
            "addr",
            "add",
            f"{host.underlay_address}/{UNDERLAY_PREFIXLEN}",
            "dev",
            host.underlay_ifname,
        )
        # The uplink has no address, not even a link-local one: like a NIC
        # given to a bridge mapping, the host itself is silent on it.
        self._plug(host.netns, host.uplink_ifname, host.wire_uplink_ifname, underlay=False)

    def _plug(self, namespace: str, inside: str, wire_side: str, *, underlay: bool) -> None:
        """A veth from `namespace` (named `inside`) to a bridge of the wire,
        made in the wire namespace with its peer created straight in
        `namespace`: it never exists in the root namespace."""
        bridge = self.underlay_bridge if underlay else self.provider_bridge
        self._ip(
            self.wire_netns,
            "link",
            "add",
            wire_side,
            "type",
            "veth",
            "peer",
            "name",
            inside,
            "netns",
            namespace,
        )
        self._ip(self.wire_netns, "link", "set", wire_side, "master", bridge, "up")
        if namespace != self.outside_netns:
            self._ip(namespace, "link", "set", inside, "addrgenmode", "none")
        self._ip(namespace, "link", "set", inside, "up")

    @staticmethod
    def _ip(namespace: str, *args: str) -> None:
        run(["ip", "-n", namespace, *args])

    # -- failures -------------------------------------------------------

    def cut_underlay(self, name: str) -> None:
        """The host loses the underlay (its wire-side veth goes down); its
        provider uplink keeps working."""
        self._ip(self.wire_netns, "link", "set", self.host(name).wire_underlay_ifname, "down")

    def restore_underlay(self, name: str) -> None:
        self._ip(self.wire_netns, "link", "set", self.host(name).wire_underlay_ifname, "up")

    def host_namespaces(self, name: str) -> list[str]:
        """The host's namespace and its agent's (fabric, appliances, workloads)."""
        host = self.host(name)
        return [n for n in netns.names() if host.owns_netns(n)]

    def kill_host(self, name: str, deadline_s: float = 10.0) -> None:
        """A power loss: SIGKILL every process in the host's namespaces (the
        agent and its daemons, whatever else runs there), then remove the
        namespaces (its veths go with them) and its runtime files under
        /run/astara and /etc/netns. A state directory the test gave the
        agent stays, as a disk would."""
        host = self.host(name)
        # Off the wire first: a namespace held by something else (a thread
        # of ours in it, an open handle) outlives its name, links included.
        for link in (host.wire_underlay_ifname, host.wire_uplink_ifname):
            run(["ip", "-n", self.wire_netns, "link", "del", link], check=False)
        deadline = time.monotonic() + deadline_s
        while True:
            victims = {pid for n in self.host_namespaces(name) for pid in netns.pids(n)}
            if not victims:
                break
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break  # netns.delete below tries again
            time.sleep(0.02)
        for namespace, process in self._spawned:
            if host.owns_netns(namespace):
                _wait_quietly(process)
        for namespace in sorted(self.host_namespaces(name), key=lambda n: n == host.netns):
            netns.delete(namespace)
        cleanup.remove_all(host.agent_prefix)
        self.dead.add(name)

    def revive_host(self, name: str) -> LabHost:
        """A killed host comes back: its namespace, underlay address and
        uplink as before, and nothing else (start its agent again)."""
        host = self.host(name)
        if host.netns in netns.names():
            raise RuntimeError(f"{name} is not dead ({host.netns} exists)")
        self._build_host(host)
        # As a booting machine does: its neighbours still hold its old MAC.
        garp.announce(
            host.netns,
            host.underlay_ifname,
            link_mac(host.netns, host.underlay_ifname),
            [ipaddress.IPv4Address(host.underlay_address)],
        )
        self.dead.discard(name)
        return host

    # -- processes ------------------------------------------------------

    def spawn(
        self,
        namespace: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A background process in `namespace` (`nsenter --net`, which execs
        it: the pid is the process's own), in its own process group, its
        stdout and stderr appended to `log_path`. Stopped when the lab closes
        (or by `stop`), killed with its host. Only the network namespace
        changes (not `ip netns exec`, which also gives the process a mount
        namespace of its own: the namespaces an agent creates there would
        be invisible to everyone else)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{namespace}", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self._spawned.append((namespace, process))
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int:
        """SIGTERM the process's group, SIGKILL after `timeout_s`; its status."""
        return _stop_group(process, timeout_s)

    # -- teardown -------------------------------------------------------

    def leftovers(self) -> dict[str, list[str]]:
        """What exists of the lab: its namespaces (the hosts' agents'
        included), links in the root namespace named under its prefix (there
        should never be any), processes it spawned still running."""
        prefixes = [f"{self.prefix}-", *(f"{p}-" for p in self.agent_prefixes())]
        return {
            "namespaces": [n for n in netns.names() if n.startswith(tuple(prefixes))],
            "root_links": [n for n in root_links() if n.startswith(self.prefix)],
            "processes": [f"{p.pid} in {n}" for n, p in self._spawned if p.poll() is None],
        }

    def close(self) -> None:
        """Remove everything (idempotent). A Ctrl-C during the teardown is
        held until the teardown is done, then raised."""
        if self._closed:
            return
        interrupted: list[int] = []
        previous: Any = None
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:

            def hold(signum: int, _frame: FrameType | None) -> None:
                interrupted.append(signum)

            previous = signal.signal(signal.SIGINT, hold)
        try:
            errors = self._teardown()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        self._closed = True
        if interrupted:
            raise KeyboardInterrupt
        if errors:
            raise RuntimeError(f"lab {self.prefix} teardown: " + "; ".join(errors))

    def _teardown(self) -> list[str]:
        errors: list[str] = []

        def attempt(what: str, action: Callable[[str], object], argument: str) -> None:
            try:
                action(argument)
            except Exception as error:  # keep removing the rest
                errors.append(f"{what} {argument}: {error}")

        for namespace, process in self._spawned:
            try:
                _stop_group(process)
            except Exception as error:
                errors.append(f"stopping {process.args!r} in {namespace}: {error}")
        for host in self.hosts:
            attempt("removing", cleanup.remove_all, host.agent_prefix)
        lab_namespaces = [n for n in netns.names() if n.startswith(f"{self.prefix}-")]
        for namespace in sorted(lab_namespaces, key=lambda n: n == self.wire_netns):
            attempt("removing", netns.delete, namespace)
        attempt("removing", cleanup.remove_all, self.prefix)
        return errors

    def __enter__(self) -> MultiHostLab:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wait_quietly(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
        process.wait(timeout_s)


def _stop_group(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int:
    if process.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue
    else:
        # The leader is gone; its group may not be.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def link_mac(namespace: str, ifname: str) -> str:
    shown = json.loads(run(["ip", "-n", namespace, "-j", "link", "show", "dev", ifname]).stdout)
    return str(shown[0]["address"])


def root_links() -> list[str]:
    """The names of the links in the root namespace (read only)."""
    output = run(["ip", "-o", "link", "show"]).stdout
    names = []
    for line in output.splitlines():
        fields = line.split(":", 2)
        if len(fields) >= 2:
            names.append(fields[1].strip().split("@", 1)[0])
    return names


# -- talking from inside a namespace -------------------------------------------


class NamespaceThread:
    """One thread that has entered a network namespace and stays there:
    sockets it creates belong to that namespace, wherever they are used
    later (Python 3.11 has no os.setns; pyroute2's changes only the calling
    thread)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f"netns-{namespace}", daemon=True)
        self._thread.start()
        self.call(lambda: None)  # raises if the namespace could not be entered

    def _serve(self) -> None:
        entered: BaseException | None = None
        try:
            # flags=0: never create the namespace (pyroute2's default would).
            _pyroute2_netns.setns(self.namespace, flags=0)
        except BaseException as error:
            entered = error
        while (job := self._jobs.get()) is not None:
            action, future = job
            if not future.set_running_or_notify_cancel():
                continue
            if entered is not None:
                future.set_exception(
                    OSError(f"cannot enter network namespace {self.namespace}: {entered}")
                )
                continue
            try:
                future.set_result(action())
            except BaseException as error:
                future.set_exception(error)

    def call(self, action: Callable[[], T]) -> T:
        """Run `action` in the namespace's thread; its result (or its error)."""
        if not self._thread.is_alive():
            raise RuntimeError(f"the thread in {self.namespace} has stopped")
        future: Future[T] = Future()
        self._jobs.put((action, future))
        return future.result()

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(5)


class NetnsTransport(httpx.BaseTransport):
    """An httpx transport whose connections are made inside `namespace`.
    Keyword arguments go to the inner httpx.HTTPTransport (verify, cert,
    retries...); a transport's TLS settings are its own, not the client's."""

    def __init__(self, namespace: str, **transport_kwargs: Any) -> None:
        self.namespace = namespace
        self._thread = NamespaceThread(namespace)
        self._inner = httpx.HTTPTransport(**transport_kwargs)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Connecting happens here (in the namespace); the response body is
        # read later from the caller's thread, on the socket made here.
        return self._thread.call(lambda: self._inner.handle_request(request))

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._thread.close()


def netns_client(
    namespace: str,
    base_url: str,
    *,
    verify: Any = True,
    cert: Any = None,
    **client_kwargs: Any,
) -> httpx.Client:
    """An httpx.Client whose requests leave from inside `namespace` (e.g.
    the controller's API at http://192.0.2.1:PORT from a test in the root
    namespace). `verify`/`cert` are the TLS settings (httpx's forms); other
    keyword arguments go to httpx.Client. Proxies from the environment are
    ignored unless `trust_env=True` (they are not reachable from a lab).
    Close the client (`with`): its thread keeps the namespace alive, so a
    host killed while a client into it is open would linger unnamed."""
    client_kwargs.setdefault("trust_env", False)
    transport = NetnsTransport(namespace, verify=verify, cert=cert)
    return httpx.Client(base_url=base_url, transport=transport, **client_kwargs)


_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def run_cli(
    namespace: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout_s: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a program (the `openstack` or `astara` CLI, curl...) inside
    `namespace`, with our environment plus `env`, minus any proxy settings;
    its output. With `check`, a non-zero exit raises AssertionError carrying
    the output."""
    environment = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    environment.update(env or {})
    result = subprocess.run(
        in_netns(namespace, argv),
        input=input_text,
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} in {namespace} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def bin_path(program: str) -> str:
    """A program installed next to our Python (the virtualenv's `astara`,
    `astara-agent`, `openstack`), for `spawn` and `run_cli`."""
    return str(Path(sys.executable).parent / program)
