"""The control plane's Prometheus metrics: one registry per process
(`REGISTRY`) and the metric objects, served by `GET /metrics` on the tenant
API (`astara.api.app`). Names start with `astara_`; the agent keeps its own
(`astara.agent.server.Metrics`).

Labels are bounded: a failure's kind (`FailureKind`), an appliance's state
(`lifecycle.State`), a key's kind (router, dhcp, l2), and an API route's
template (`/v2.0/routers/{router_id}`), never a raw path or an id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from astara.orchestrator.failures import FailureKind
from astara.orchestrator.lifecycle import State

REGISTRY = CollectorRegistry()

# Reconciles are a few ms (nothing to do) to seconds (a first apply).
_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RECONCILE_SECONDS = Histogram(
    "astara_reconcile_seconds",
    "Time one reconcile of a key took (observe, decide, execute, until settled)",
    ["kind"],  # router, dhcp, l2
    buckets=_RECONCILE_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "astara_reconcile_queue_depth",
    "Keys woken and waiting for a worker (settling, due, or waiting for a free worker)",
    registry=REGISTRY,
)
RUNNING = Gauge(
    "astara_reconcile_running",
    "Keys being reconciled now",
    registry=REGISTRY,
)
PUSHES = Counter(
    "astara_pushes",
    "Appliance configs sent to an agent",
    registry=REGISTRY,
)
REBUILDS = Counter(
    "astara_rebuilds",
    "Appliances deleted and pushed anew (missing, unhealthy, or an operator's rebuild)",
    registry=REGISTRY,
)
OBSERVATIONS = Counter(
    "astara_observations",
    "Appliance observations by source: the agent asked (`agent`), or what the"
    " host listed in a resync trusted (`listed`)",
    ["source"],
    registry=REGISTRY,
)
FAILURES = Counter(
    "astara_reconcile_failures",
    "Failed reconcile steps by kind",
    ["kind"],  # astara.orchestrator.failures.FailureKind
    registry=REGISTRY,
)
APPLIANCES = Gauge(
    "astara_appliances",
    "Appliances by lifecycle state (read from the database at each scrape)",
    ["state"],  # astara.orchestrator.lifecycle.State
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "astara_api_request_seconds",
    "Tenant and operators' API request latency by route template",
    ["method", "route"],
    buckets=_REQUEST_BUCKETS,
    registry=REGISTRY,
)

# Every known label value from the start, so that a series exists (at 0)
# before its first event and a rate over it is never "no data".
for _kind in ("router", "dhcp", "l2"):
    RECONCILE_SECONDS.labels(_kind)
for _source in ("agent", "listed"):
    OBSERVATIONS.labels(_source)
for _failure in FailureKind:
    FAILURES.labels(_failure.value)
for _state in State:
    APPLIANCES.labels(_state.value)
