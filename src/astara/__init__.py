"""Astara: open network-service orchestration from plain Linux parts."""

__version__ = "0.1.0"
