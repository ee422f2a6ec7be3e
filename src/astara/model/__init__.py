"""The pure contracts and input rules shared by the API, the orchestrator and the agent:
no I/O, no clock, importable by every layer (DESIGN.md, layer 1)."""
