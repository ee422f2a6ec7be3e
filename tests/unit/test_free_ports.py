"""`astara.testing.net.free_ports`: the ports a test's servers listen on."""

from __future__ import annotations

import socket

from astara.testing.net import free_ports


def test_ports_chosen_together_are_distinct_and_free() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", ports[0]))
        second.bind(("127.0.0.1", ports[1]))
