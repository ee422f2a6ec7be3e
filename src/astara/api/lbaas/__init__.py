"""The Octavia v2 load-balancer API (`/v2/lbaas/…` and `/v2.0/lbaas/…` on the
tenant API's port): Octavia's envelopes, WSME-style validation messages and
fault bodies (`errors`, `bodies`), and one module per resource.

What is served: docs/api-compatibility.md, "Load balancers".
"""
