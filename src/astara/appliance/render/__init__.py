"""Render an appliance config to the exact texts the appliance runs (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from astara.appliance.render.dnsmasq import DnsmasqFiles, render_dnsmasq
from astara.appliance.render.nftables import NftRuleset, render_nftables
from astara.appliance.render.radvd import render_radvd
from astara.appliance.schema import ApplianceConfig


@dataclass(frozen=True)
class Rendered:
    nftables: NftRuleset
    dnsmasq: DnsmasqFiles
    radvd: str

    def texts(self) -> dict[str, str]:
        """What `GET /v1/appliances/{id}/rendered` shows: file name → text."""
        return {
            "nftables.nft": self.nftables.text(),
            "dnsmasq.conf": self.dnsmasq.conf,
            "dnsmasq.hosts": self.dnsmasq.hosts,
            "radvd.conf": self.radvd,
        }


def render(
    config: ApplianceConfig, state_dir: PurePath, network_mtus: dict[str, int] | None = None
) -> Rendered:
    return Rendered(
        nftables=render_nftables(config),
        dnsmasq=render_dnsmasq(config, state_dir, network_mtus),
        radvd=render_radvd(config, network_mtus),
    )


__all__ = ["Rendered", "render"]
