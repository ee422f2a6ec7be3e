"""The plans PostgreSQL keeps for the port create's statements.

psycopg prepares a statement from its fifth execution on, and PostgreSQL
then plans it once for any parameters (a generic plan): what the planner
cannot see in a bound value it estimates from averages. A bound device
owner made it scan every port of the network to find its router
interfaces, on every port create, under the network's lock: 3 ms at 10,000
ports, and the creates on one network waited for each other behind it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Executable, event, insert, text

from astara.api import dhcp
from astara.db.engine import make_engine
from astara.db.migrate import upgrade
from astara.db.models import IpAllocation, Network, Port, Project, Subnet, dhcp_appliance_id
from astara.testing.postgres import PostgresServer

PORTS = 2000


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def generic_plan(
    engine: Engine, statement: Executable, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The nodes of PostgreSQL's generic plan for `statement`, as the driver
    sends it (constants written in, the rest bound)."""
    sent: list[tuple[str, dict[str, Any]]] = []

    def keep(_c: Any, _cursor: Any, sql: str, parameters: Any, *_: Any) -> None:
        sent.append((sql, dict(parameters)))

    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", keep)
        connection.execute(statement, params)
        event.remove(connection, "before_cursor_execute", keep)
        sql, bound = sent[-1]
        names = list(bound)
        for number, name in enumerate(names, 1):
            sql = sql.replace(f"%({name})s", f"${number}")
        values = ", ".join("'" + str(bound[name]).replace("'", "''") + "'" for name in names)
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.execute("SET plan_cache_mode = force_generic_plan")
        raw.execute("PREPARE judged AS " + sql.replace("%%", "%"))
        cursor = raw.execute(f"EXPLAIN (FORMAT JSON) EXECUTE judged({values})")
        row = cursor.fetchone()
        assert row is not None
        found = row[0] if isinstance(row[0], list) else json.loads(row[0])
        connection.rollback()
    return list(_nodes(found[0]["Plan"]))


def test_the_dhcp_judgement_never_scans_the_ports_of_a_network(postgres: PostgresServer) -> None:
    engine = make_engine(postgres.create_database())
    try:
        upgrade(engine)
        now = datetime.now(UTC).replace(tzinfo=None)
        network_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamps = {"created_at": now, "updated_at": now, "revision_number": 1}
        with engine.begin() as connection:
            connection.execute(insert(Project), [{"id": "p", "name": "p", "created_at": now}])
            connection.execute(
                insert(Network), [{"id": network_id, "project_id": "p", "name": "n", **stamps}]
            )
            connection.execute(
                insert(Subnet),
                [
                    {
                        "id": subnet_id,
                        "project_id": "p",
                        "network_id": network_id,
                        "ip_version": 4,
                        "cidr": "10.0.0.0/16",
                        "gateway_ip": "10.0.0.1",
                        "enable_dhcp": True,
                        **stamps,
                    }
                ],
            )
            ports = [
                {
                    "id": str(uuid.uuid4()),
                    "project_id": "p",
                    "network_id": network_id,
                    "mac_address": f"fa:16:3e:00:{n // 256:02x}:{n % 256:02x}",
                    "device_owner": "compute:nova",
                    **stamps,
                }
                for n in range(PORTS)
            ]
            connection.execute(insert(Port), ports)
            connection.execute(
                insert(IpAllocation),
                [
                    {
                        "port_id": p["id"],
                        "subnet_id": subnet_id,
                        "network_id": network_id,
                        "ip_address": f"10.0.{n // 250 + 1}.{n % 250 + 2}",
                    }
                    for n, p in enumerate(ports)
                ],
            )
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
            connection.commit()
        nodes = generic_plan(
            engine,
            dhcp._JUDGEMENT,
            {"network_id": network_id, "device_id": dhcp_appliance_id(network_id)},
        )
        # Ports are reached by a key (their id, a device id) or by their
        # network and device owner together, never by a scan of them all or
        # of the network's.
        reads = [n for n in nodes if n.get("Relation Name") == "ports"]
        assert reads
        for read in reads:
            assert read["Node Type"] != "Seq Scan", read
            condition = read.get("Index Cond", "")
            assert "network_id" not in condition or "device_owner" in condition, read
    finally:
        engine.dispose()
