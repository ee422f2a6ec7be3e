"""Traffic between namespaces, for assertions on real packets.

- `ping` / `wait_for_ping`: ICMP reachability, polled up to a deadline;
- `WhoAmI`: a TCP server that answers each client with the source address it
  saw (SNAT and floating IPs are asserted on that);
- `EchoServer` + `Connection`: a long-lived TCP connection to check that it
  survives a change;
- `Capture`: tcpdump in a namespace, waiting for a matching packet;
- `free_ports`: local TCP ports for the servers a test starts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

from astara.linux.run import in_netns, run

T = TypeVar("T")


def free_ports(count: int) -> list[int]:
    """`count` distinct local TCP ports, free now, for the servers one test
    starts together. They are chosen with every probe held open: a port
    probed and closed is free again, so two probes in a row may name the same
    port (a server's API and control listener collided that way in CI)."""
    with contextlib.ExitStack() as held:
        probes = [held.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port() -> int:
    """One local TCP port, free now (`free_ports`)."""
    return free_ports(1)[0]


def wait_until(
    probe: Callable[[], T],
    timeout_s: float = 20.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def sh(netns: str, argv: Sequence[str], timeout_s: float = 30.0, check: bool = True) -> str:
    return run(argv, netns=netns, timeout_s=timeout_s, check=check).stdout


def ping(netns: str, address: str, timeout_s: float = 1.0) -> bool:
    """One echo request; True if answered within `timeout_s`."""
    argv = ["ping", "-n", "-c", "1", "-W", str(max(1, int(timeout_s))), address]
    return run(argv, netns=netns, check=False, timeout_s=timeout_s + 5).returncode == 0


def wait_for_ping(netns: str, address: str, timeout_s: float = 20.0) -> None:
    wait_until(lambda: ping(netns, address), timeout_s, 0.2, f"{netns} to reach {address}")


def never_pings(netns: str, address: str, attempts: int = 3) -> bool:
    return not any(ping(netns, address) for _ in range(attempts))


def tcp_request(netns: str, address: str, port: int, timeout_s: float = 3.0) -> str | None:
    """Connect, read what the server says, or None if the connection fails."""
    target = f"[{address}]" if ":" in address else address
    result = run(
        ["socat", "-T", str(timeout_s), "-", f"TCP:{target}:{port},connect-timeout={timeout_s}"],
        netns=netns,
        input_text="",
        check=False,
        timeout_s=timeout_s + 5,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def seen_source(netns: str, address: str, port: int, timeout_s: float = 3.0) -> str | None:
    """Ask a `WhoAmI` server which source address our connection arrived from
    (normalized: IPv4-mapped IPv6 as IPv4, IPv6 compressed); None if no answer."""
    answer = tcp_request(netns, address, port, timeout_s)
    if not answer:
        return None
    seen = ipaddress.ip_address(answer.strip("[]"))
    if isinstance(seen, ipaddress.IPv6Address) and seen.ipv4_mapped is not None:
        return str(seen.ipv4_mapped)
    return str(seen)


class _Server:
    def __init__(self, netns: str, argv: list[str], port: int) -> None:
        self.netns = netns
        self.port = port
        self.process = subprocess.Popen(
            in_netns(netns, argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        wait_until(self._listening, 10, 0.05, f"a server on port {port} in {netns}")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            error = self.process.stderr.read().decode() if self.process.stderr else ""
            raise RuntimeError(f"server in {self.netns} exited: {error}")
        return f":{self.port} " in sh(self.netns, ["ss", "-Htln"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class WhoAmI(_Server):
    """Answers every TCP client with the client address it sees."""

    def __init__(self, netns: str, port: int = 7000) -> None:
        super().__init__(
            netns,
            [
                "socat",
                f"TCP6-LISTEN:{port},ipv6only=0,reuseaddr,fork",
                "SYSTEM:echo $SOCAT_PEERADDR",
            ],
            port,
        )


class EchoServer(_Server):
    """Echoes every line back, for long-lived connections."""

    def __init__(self, netns: str, port: int = 7001) -> None:
        super().__init__(
            netns, ["socat", f"TCP6-LISTEN:{port},ipv6only=0,reuseaddr,fork", "EXEC:cat"], port
        )


_NAMED_HTTP = """
import http.server, socket, sys, time, urllib.parse
name = sys.argv[2].encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once on a kept connection
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        time.sleep(float(query.get("sleep_s", ["0"])[0]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.send_header("Set-Cookie", "APPID=" + name.decode() + "; Path=/")
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
server = Server(("::", int(sys.argv[1])), Handler)
server.serve_forever()
"""


class NamedHttpServer(_Server):
    """An HTTP/1.1 server (IPv4 and IPv6, keep-alive) that answers every GET
    with its name: a load balancer's member. Each answer sets the cookie
    `APPID=<name>` (an application's session cookie, for APP_COOKIE
    persistence); `?sleep_s=N` answers after N seconds (a busy member, for
    LEAST_CONNECTIONS)."""

    def __init__(self, netns: str, name: str, port: int = 8000) -> None:
        super().__init__(netns, [sys.executable, "-c", _NAMED_HTTP, str(port), name], port)


def http_get(netns: str, url: str, timeout_s: float = 3.0) -> str | None:
    """A GET's body from `netns` (curl), or None if it failed."""
    result = run(
        ["curl", "-s", "-f", "-m", str(timeout_s), url],
        netns=netns,
        check=False,
        timeout_s=timeout_s + 5,
    )
    return result.stdout if result.returncode == 0 else None


class Connection:
    """One TCP connection held open from `netns` (through socat's stdio)."""

    def __init__(self, netns: str, address: str, port: int) -> None:
        target = f"[{address}]" if ":" in address else address
        self.process = subprocess.Popen(
            in_netns(netns, ["socat", "-", f"TCP:{target}:{port},connect-timeout=5"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )

    def exchange(self, line: str, timeout_s: float = 5.0) -> str | None:
        """Send a line; return the echoed line, or None if the connection is gone."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if self.process.poll() is not None:
            return None
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()))  # type: ignore[union-attr]
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return None
        reader.start()
        reader.join(timeout_s)
        if not answer or not answer[0]:
            return None
        return answer[0].rstrip("\n")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Capture:
    """tcpdump on an interface in a namespace; lines arrive as packets do."""

    def __init__(self, netns: str, interface: str, expression: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            in_netns(netns, ["tcpdump", "-l", "-n", "-e", "-i", interface, expression]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # tcpdump says "listening on ..." on stderr once the socket is open.
        assert self.process.stderr is not None
        banner = ""
        while "listening" not in banner:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError(f"tcpdump in {netns} failed: {banner}")
            banner += line

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 10.0) -> str:
        return wait_until(
            lambda: next((line for line in self.lines if text in line), ""),
            timeout_s,
            0.05,
            f"a packet matching {text!r}",
        )

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_FRAMES = r"""
import socket, struct, sys


def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


kind, ifname, dst_mac, src_mac, src, dst = sys.argv[1:7]
if kind == "vlan0-echo":  # an ICMP echo request in an 802.1Q header with VLAN id 0
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4153, 1) + b"astara" * 4
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    frame = mac(dst_mac) + mac(src_mac) + struct.pack("!HHH", 0x8100, 0, 0x0800) + ip + icmp
else:  # "na": an unsolicited neighbour advertisement for address `sys.argv[7]`
    target = socket.inet_pton(socket.AF_INET6, sys.argv[7])
    body = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + b"\x02\x01" + mac(src_mac)
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    pseudo = s6 + d6 + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    ip = struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + s6 + d6
    frame = mac(dst_mac) + mac(src_mac) + struct.pack("!H", 0x86DD) + ip + body
sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sender.bind((ifname, 0))
for _ in range(2):
    sender.send(frame)
"""


def send_frame(netns: str, kind: str, *args: str) -> None:
    """Send a hand-made frame from a namespace's interface, twice: `kind`
    `vlan0-echo` (ifname, dst MAC, src MAC, src IPv4, dst IPv4) is an echo
    request tagged with VLAN 0; `na` (ifname, dst MAC, src MAC, src IPv6,
    dst IPv6, target) an unsolicited neighbour advertisement."""
    run([sys.executable, "-c", _FRAMES, kind, *args], netns=netns)
