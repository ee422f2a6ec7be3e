"""Helpers for Astara's root-tier tests and benchmarks: uniquely prefixed
namespaces, a real agent process, commands in namespaces, and assertions on
the packets that arrive."""
