"""Render an appliance config to the exact texts the appliance runs (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from astara.appliance.actions import DaemonName
from astara.appliance.render.dnsmasq import DnsmasqFiles, dhcp_subnets, render_dnsmasq
from astara.appliance.render.ha import render_conntrackd, render_keepalived
from astara.appliance.render.haproxy import MetadataProxy, render_haproxy, serves_metadata
from astara.appliance.render.loadbalancer import render_loadbalancer
from astara.appliance.render.nftables import METADATA_PORT, NftRuleset, render_nftables
from astara.appliance.render.radvd import ra_subnets, render_radvd
from astara.appliance.schema import ApplianceConfig


@dataclass(frozen=True)
class Rendered:
    nftables: NftRuleset
    dnsmasq: DnsmasqFiles
    radvd: str
    haproxy: str = ""  # the metadata proxy; "" where the host serves no metadata
    loadbalancer: str = ""  # a load balancer's haproxy; "" for other appliances
    keepalived: str = ""  # an HA router member's; "" for other appliances
    conntrackd: str = ""  # an HA router member's, syncing connections with its peer

    def texts(self) -> dict[str, str]:
        """What `GET /v1/appliances/{id}/rendered` shows: file name → text."""
        return {
            "nftables.nft": self.nftables.text(),
            "dnsmasq.conf": self.dnsmasq.conf,
            "dnsmasq.hosts": self.dnsmasq.hosts,
            "radvd.conf": self.radvd,
            "haproxy.cfg": self.haproxy,
            "loadbalancer.cfg": self.loadbalancer,
            "keepalived.conf": self.keepalived,
            "conntrackd.conf": self.conntrackd,
        }


def render(
    config: ApplianceConfig,
    state_dir: PurePath,
    network_mtus: dict[str, int] | None = None,
    metadata: MetadataProxy | None = None,
    max_connections: int = 10_000,
    sockets: PurePath | None = None,
) -> Rendered:
    """`metadata`: where the host's agent answers metadata requests (None:
    this host serves none). `max_connections`: what one load balancer's
    haproxy may hold on the host (see `render_loadbalancer`). `sockets`:
    where control sockets that need a short path go (conntrackd's)."""
    return Rendered(
        nftables=render_nftables(config),
        dnsmasq=render_dnsmasq(config, state_dir, network_mtus),
        radvd=render_radvd(config, network_mtus),
        haproxy=render_haproxy(config, metadata, METADATA_PORT),
        loadbalancer=render_loadbalancer(config.loadbalancer, state_dir, max_connections),
        keepalived=render_keepalived(config, state_dir),
        conntrackd=render_conntrackd(config, state_dir, sockets),
    )


def expected_daemons(config: ApplianceConfig, metadata: bool) -> dict[DaemonName, bool]:
    """Which daemons `config` runs on a host that serves metadata or not."""
    return {
        DaemonName.dnsmasq: bool(dhcp_subnets(config)),
        DaemonName.radvd: bool(ra_subnets(config)),
        DaemonName.haproxy: metadata and serves_metadata(config),
        DaemonName.loadbalancer: config.loadbalancer is not None
        and config.loadbalancer.enabled
        and any(listener.enabled for listener in config.loadbalancer.listeners),
        DaemonName.conntrackd: config.ha is not None and config.ha.conntrack_sync,
        DaemonName.keepalived: config.ha is not None,
    }


__all__ = ["MetadataProxy", "Rendered", "expected_daemons", "render"]
