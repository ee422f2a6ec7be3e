"""Octavia's L7 policies and rules: shapes, defaults, positions, every
refusal in Octavia's words (and ours where haproxy would misread a value),
statuses from the appliance, cascades; what the API accepts becomes a
config haproxy accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from astara.appliance.render.loadbalancer import render_loadbalancer
from astara.appliance.schema import validate_semantics
from astara.db.models import L7Policy, L7Rule, LoadBalancer
from astara.drivers import loadbalancer as lb_driver
from astara.orchestrator.lifecycle import State
from astara.orchestrator.statuses import write_lb_statuses
from tests.component.conftest import Api, project
from tests.component.test_api_lbaas import LBS, active_balancer, fault
from tests.unit.validators import haproxy_check

L7 = "/v2/lbaas/l7policies"


class Balancer:
    """An ACTIVE load balancer with an HTTP listener (default pool `web`),
    a second HTTP pool `api`, and a TCP listener."""

    def __init__(self, api: Api, engine: Engine) -> None:
        self.api, self.engine = api, engine
        self.id = active_balancer(api, engine)["id"]
        self.listener = self.post("listeners", "listener", protocol="HTTP", protocol_port=80)
        self.tcp = self.post("listeners", "listener", protocol="TCP", protocol_port=22)
        self.web = self.post(
            "pools",
            "pool",
            listener_id=self.listener["id"],
            protocol="HTTP",
            lb_algorithm="ROUND_ROBIN",
        )
        self.api_pool = self.post("pools", "pool", protocol="HTTP", lb_algorithm="ROUND_ROBIN")
        self.tcp_pool = self.post("pools", "pool", protocol="TCP", lb_algorithm="ROUND_ROBIN")

    def post(self, path: str, key: str, **fields: Any) -> dict[str, Any]:
        if path in ("listeners", "pools"):
            fields.setdefault("loadbalancer_id", self.id)
        made = self.api("POST", f"/v2/lbaas/{path}", {key: fields})
        assert made.status_code == 201, made.text
        self.activate()
        found: dict[str, Any] = made.json()[key]
        return found

    def activate(self) -> None:
        """What the orchestrator writes once the appliance runs its config."""
        with Session(self.engine) as session:
            row = session.get(LoadBalancer, self.id)
            assert row is not None
            plan = lb_driver.plan(session, row)
            write_lb_statuses(session, plan.appliance_id, State.ACTIVE, plan)
            session.commit()

    def policy(self, **fields: Any) -> Any:
        body = {"listener_id": self.listener["id"], "action": "REJECT", **fields}
        return self.api("POST", L7, {"l7policy": body})

    def rule(self, policy_id: str, **fields: Any) -> Any:
        body = {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api", **fields}
        return self.api("POST", f"{L7}/{policy_id}/rules", {"rule": body})


@pytest.fixture
def lb(admin: Api, engine: Engine) -> Balancer:
    return Balancer(admin, engine)


def made(response: Any, key: str = "l7policy") -> dict[str, Any]:
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()[key]
    return found


def test_a_policy_has_octavias_shape_and_defaults(lb: Balancer) -> None:
    policy = made(lb.policy(action="REDIRECT_TO_URL", redirect_url="http://example.com/x"))
    assert set(policy) == {
        "id", "name", "description", "provisioning_status", "operating_status",
        "admin_state_up", "project_id", "tenant_id", "action", "listener_id",
        "redirect_pool_id", "redirect_url", "redirect_prefix", "position", "rules",
        "created_at", "updated_at", "tags", "redirect_http_code",
    }  # fmt: skip
    assert (policy["position"], policy["redirect_http_code"], policy["rules"]) == (1, 302, [])
    assert (policy["provisioning_status"], policy["operating_status"]) == (
        "PENDING_CREATE",
        "OFFLINE",
    )
    assert policy["tenant_id"] == policy["project_id"] and policy["admin_state_up"] is True
    # Its load balancer and listener wait for the appliance; no change meanwhile.
    shown = lb.api("GET", f"{LBS}/{lb.id}").json()["loadbalancer"]
    assert shown["provisioning_status"] == "PENDING_UPDATE"
    listener = lb.api("GET", f"/v2/lbaas/listeners/{lb.listener['id']}").json()["listener"]
    assert listener["provisioning_status"] == "PENDING_UPDATE"
    assert listener["l7policies"] == [{"id": policy["id"]}]
    assert fault(lb.policy()) == (
        409,
        "Client",
        f"Load Balancer {lb.id} is immutable and cannot be updated.",
    )
    assert fault(lb.rule(policy["id"]))[0] == 409
    lb.activate()
    rule = made(lb.rule(policy["id"]), "rule")
    assert set(rule) == {
        "id", "type", "compare_type", "key", "value", "invert", "provisioning_status",
        "operating_status", "created_at", "updated_at", "project_id", "tenant_id",
        "admin_state_up", "tags",
    }  # fmt: skip
    assert (rule["invert"], rule["key"], rule["admin_state_up"]) == (False, None, True)
    lb.activate()
    shown = lb.api("GET", f"{L7}/{policy['id']}").json()["l7policy"]
    assert shown["rules"] == [{"id": rule["id"]}]
    listed = lb.api("GET", f"{L7}/{policy['id']}/rules").json()
    assert [r["id"] for r in listed["rules"]] == [rule["id"]] and listed["rules_links"] == []
    both = lb.api("GET", f"/v2.0/lbaas/l7policies?listener_id={lb.listener['id']}").json()
    assert [p["id"] for p in both["l7policies"]] == [policy["id"]]
    assert both["l7policies_links"] == []
    # A policy may come with its rules.
    carried = made(
        lb.policy(rules=[{"type": "HOST_NAME", "compare_type": "EQUAL_TO", "value": "a.example"}])
    )
    assert len(carried["rules"]) == 1 and carried["position"] == 2
    # Another project's: 403; none: 404 in Octavia's words.
    bob = project(lb.api, "bob")
    assert fault(bob("GET", f"{L7}/{policy['id']}"))[0] == 403
    unknown = "11111111-2222-3333-4444-555555555555"
    assert fault(lb.api("GET", f"{L7}/{unknown}"))[2] == f"L7 Policy {unknown} not found."
    assert fault(lb.api("GET", f"{L7}/{unknown}/rules"))[2] == f"L7Policy {unknown} not found."
    assert fault(lb.api("GET", f"{L7}/{policy['id']}/rules/{unknown}"))[2] == (
        f"L7 Rule {unknown} not found."
    )


def positions(lb: Balancer) -> dict[str, int]:
    found = lb.api("GET", f"{L7}?listener_id={lb.listener['id']}").json()["l7policies"]
    return {p["name"]: p["position"] for p in found}


def test_positions_are_one_to_n_and_move_the_others(lb: Balancer) -> None:
    for name in ("a", "b", "c"):
        made(lb.policy(name=name))
        lb.activate()
    assert positions(lb) == {"a": 1, "b": 2, "c": 3}
    first = made(lb.policy(name="first", position=1))
    lb.activate()
    assert first["position"] == 1
    assert positions(lb) == {"first": 1, "a": 2, "b": 3, "c": 4}
    # Past the end: last.
    made(lb.policy(name="last", position=99))
    lb.activate()
    assert positions(lb)["last"] == 5
    ids = {p["name"]: p["id"] for p in lb.api("GET", L7).json()["l7policies"]}
    moved = lb.api("PUT", f"{L7}/{ids['first']}", {"l7policy": {"position": 4}})
    assert moved.json()["l7policy"]["position"] == 4
    lb.activate()
    assert positions(lb) == {"a": 1, "b": 2, "c": 3, "first": 4, "last": 5}
    lb.api("PUT", f"{L7}/{ids['last']}", {"l7policy": {"position": 2}})
    lb.activate()
    assert positions(lb) == {"a": 1, "last": 2, "b": 3, "c": 4, "first": 5}
    assert lb.api("DELETE", f"{L7}/{ids['b']}").status_code == 204
    lb.activate()
    assert positions(lb) == {"a": 1, "last": 2, "c": 3, "first": 4}
    listener = lb.api("GET", f"/v2/lbaas/listeners/{lb.listener['id']}").json()["listener"]
    assert listener["l7policies"] == [{"id": ids[n]} for n in ("a", "last", "c", "first")]
    assert fault(lb.api("PUT", f"{L7}/{ids['a']}", {"l7policy": {"position": 0}}))[2] == (
        "Invalid input for field/attribute position. Value: '0'. Value should be greater or"
        " equal to 1"
    )


def test_actions_and_their_arguments_as_octavia_makes_them_consistent(lb: Balancer) -> None:
    def refused(**fields: Any) -> str:
        return fault(lb.policy(**fields))[2]

    assert refused(action="REDIRECT_TO_URL") == (
        "Invalid L7 Policy arguments: redirect_url must not be None"
    )
    assert refused(action="REDIRECT_PREFIX") == (
        "Invalid L7 Policy arguments: redirect_prefix must not be None"
    )
    assert refused(action="REDIRECT_TO_POOL") == (
        "Invalid L7 Policy arguments: redirect_pool_id or redirect_pool must not be None"
    )
    assert refused(
        action="REDIRECT_PREFIX",
        redirect_prefix="http://a.example",
        redirect_pool_id=lb.api_pool["id"],
    ) == (
        "Invalid L7 Policy arguments: Cannot specify redirect_pool_id and redirect_url or"
        " redirect_prefix at the same time"
    )
    assert refused(action="DROP").startswith(
        "Invalid input for field/attribute action. Value: 'DROP'. Value should be one of:"
    )
    for url in (
        "ftp://a.example/",
        "http://",
        "http://a.example/a b",
        "/relative",
        "http://a.example/'\n",
    ):
        assert refused(action="REDIRECT_TO_URL", redirect_url=url) == (
            f"Invalid input for field/attribute redirect_url. Value: '{url}'."
            " Value must be a valid URL string"
        )
    assert refused(
        action="REDIRECT_TO_URL", redirect_url="http://a.example", redirect_http_code=304
    ).startswith(
        "Invalid input for field/attribute redirect_http_code. Value: '304'."
        " Value should be one of:"
    )
    assert refused(action="REDIRECT_TO_POOL", redirect_pool_id=lb.tcp_pool["id"]) == (
        "Validation failure: The pool protocol 'TCP' is invalid while the listener protocol"
        " is 'HTTP'."
    )
    unknown = "11111111-2222-3333-4444-555555555555"
    assert fault(lb.policy(action="REDIRECT_TO_POOL", redirect_pool_id=unknown))[:3:2] == (
        404,
        f"Pool {unknown} not found.",
    )
    assert fault(lb.policy(listener_id=unknown))[2] == f"Listener {unknown} not found."
    assert fault(lb.policy(listener_id=lb.tcp["id"])) == (
        501,
        "Server",
        "Provider 'astara' does not support a requested option: TCP protocol listeners do not"
        " support L7 policies",
    )
    assert fault(lb.api("POST", L7, {"l7policy": {"listener_id": lb.listener["id"]}}))[2] == (
        "Invalid input for field/attribute action. Value: 'None'. Mandatory field missing."
    )
    # REJECT with a prefix is a prefix redirect (Octavia's quirk); a code without a redirect goes.
    prefix = made(
        lb.policy(action="REJECT", redirect_prefix="https://b.example", redirect_http_code=301)
    )
    assert (prefix["action"], prefix["redirect_http_code"]) == ("REDIRECT_PREFIX", 301)
    lb.activate()
    reject = made(lb.policy(redirect_http_code=308))
    assert (reject["action"], reject["redirect_http_code"]) == ("REJECT", None)
    lb.activate()
    # A PUT with a URL alone makes it a URL redirect (302 by default); with a pool, a pool's.
    url = f"{L7}/{reject['id']}"
    changed = lb.api("PUT", url, {"l7policy": {"redirect_url": "http://c.example/"}}).json()[
        "l7policy"
    ]
    assert (changed["action"], changed["redirect_url"], changed["redirect_http_code"]) == (
        "REDIRECT_TO_URL",
        "http://c.example/",
        302,
    )
    assert changed["provisioning_status"] == "PENDING_UPDATE"
    lb.activate()
    changed = lb.api("PUT", url, {"l7policy": {"redirect_pool_id": lb.api_pool["id"]}}).json()[
        "l7policy"
    ]
    assert (changed["action"], changed["redirect_url"], changed["redirect_http_code"]) == (
        "REDIRECT_TO_POOL",
        None,
        None,
    )
    lb.activate()
    changed = lb.api("PUT", url, {"l7policy": {"action": "REJECT"}}).json()["l7policy"]
    assert (changed["action"], changed["redirect_pool_id"]) == ("REJECT", None)
    lb.activate()
    assert fault(lb.api("PUT", url, {"l7policy": {}}))[2] == (
        "Invalid L7 Policy arguments: Invalid update options"
    )
    # A pool a policy redirects to stays while it does.
    to_pool = made(lb.policy(action="REDIRECT_TO_POOL", redirect_pool_id=lb.api_pool["id"]))
    lb.activate()
    assert fault(lb.api("DELETE", f"/v2/lbaas/pools/{lb.api_pool['id']}")) == (
        409,
        "Client",
        f"Pool {lb.api_pool['id']} is in use by L7 policy {to_pool['id']}",
    )


NO_VALUE = "Invalid L7 Rule: L7 rule type requires a value"
REGEX = "Unable to parse regular expression: "
PYTHONS = f"{REGEX}\\N{{}}, \\u, \\U and the a, L, u flags are Python's"
ASCII = "Invalid characters in value: printable ASCII only"
COMPARISON = "Invalid L7 Rule: invalid comparison type for rule type"
UNTERMINATED = f"{REGEX}missing ), unterminated subpattern at position 0"
NAMES = f"{REGEX}group names are at most 32 characters"
TLS = (
    "Invalid L7 Rule: SSL_CONN_HAS_CERT rules need a TERMINATED_HTTPS listener that asks"
    " for client certificates, which this deployment does not offer"
)
REFUSED_RULES = [
    ({"value": ""}, NO_VALUE),
    ({"type": "HEADER", "key": "X-A", "value": '""'}, NO_VALUE),
    ({"type": "HEADER"}, "Invalid L7 Rule: L7 rule type requires a key"),
    ({"type": "COOKIE", "key": "a b"}, "Invalid characters in key"),
    ({"type": "HEADER", "key": "a,1"}, "Invalid characters in key"),
    ({"type": "HEADER", "key": "it's"}, "Invalid characters in key"),
    ({"type": "HEADER", "key": "X-A", "value": "a b"}, "Invalid characters in header value"),
    ({"type": "COOKIE", "key": "c", "value": "a;b"}, "Invalid characters in cookie value"),
    ({"value": "/a b"}, "Invalid characters in comparison value"),
    ({"type": "FILE_TYPE", "value": "jpg"}, COMPARISON),
    ({"compare_type": "REGEX", "value": "(a"}, UNTERMINATED),
    ({"compare_type": "REGEX", "value": "\\u00e9"}, PYTHONS),
    ({"compare_type": "REGEX", "value": "(?a)x"}, PYTHONS),
    ({"compare_type": "REGEX", "value": f"(?P<{'n' * 33}>x)"}, NAMES),
    ({"compare_type": "REGEX", "value": "[[:nope:]]"}, f"{REGEX}unknown POSIX class [:nope:]"),
    ({"compare_type": "REGEX", "value": "caf\u00e9"}, ASCII),
    ({"value": "/a\tb\x01"}, ASCII),
    ({"type": "SSL_CONN_HAS_CERT", "compare_type": "EQUAL_TO", "value": "true"}, TLS),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "message"), REFUSED_RULES)
def test_rules_are_refused_in_octavias_words(
    lb: Balancer, fields: dict[str, Any], message: str
) -> None:
    policy = made(lb.policy())
    lb.activate()
    assert fault(lb.rule(policy["id"], **fields)) == (
        400,
        "Client",
        f"Error parsing L7Rule: {message}",
    )
    # Nothing changed.
    assert lb.api("GET", f"{L7}/{policy['id']}/rules").json()["rules"] == []
    shown = lb.api("GET", f"{LBS}/{lb.id}").json()["loadbalancer"]
    assert shown["provisioning_status"] == "ACTIVE"


def test_a_rule_update_is_checked_as_the_rule_will_be(lb: Balancer) -> None:
    policy = made(lb.policy())
    lb.activate()
    rule = made(lb.rule(policy["id"], type="HEADER", key="X-A", value="1"), "rule")
    lb.activate()
    url = f"{L7}/{policy['id']}/rules/{rule['id']}"
    assert fault(lb.api("PUT", url, {"rule": {"key": None}}))[2] == (
        "Error parsing L7Rule: Invalid L7 Rule: L7 rule type requires a key"
    )
    changed = lb.api(
        "PUT", url, {"rule": {"compare_type": "REGEX", "value": "^v[0-9]+$", "invert": True}}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["rule"]["value"], changed.json()["rule"]["invert"]) == (
        "^v[0-9]+$",
        True,
    )
    # A rule's change is its policy's and listener's too.
    shown = lb.api("GET", f"{L7}/{policy['id']}").json()["l7policy"]
    assert shown["provisioning_status"] == "PENDING_UPDATE"
    lb.activate()
    shown = lb.api("GET", f"{L7}/{policy['id']}").json()["l7policy"]
    assert (shown["provisioning_status"], shown["operating_status"]) == ("ACTIVE", "ONLINE")
    # A policy not ACTIVE takes no rule change (Octavia's check).
    with Session(lb.engine) as session:
        row = session.get(L7Policy, policy["id"])
        assert row is not None
        row.provisioning_status = "ERROR"
        session.commit()
    assert fault(lb.rule(policy["id"])) == (
        409,
        "Client",
        f"L7Policy {policy['id']} is immutable and cannot be updated.",
    )


def test_fifty_rules_at_most(lb: Balancer) -> None:
    many = [{"type": "PATH", "compare_type": "CONTAINS", "value": f"/{i}"} for i in range(51)]
    assert fault(lb.policy(rules=many))[0] == 409
    policy = made(lb.policy(rules=many[:50]))
    lb.activate()
    assert fault(lb.rule(policy["id"])) == (
        409,
        "Client",
        f"Too many rules on L7 policy {policy['id']}",
    )


def test_statuses_follow_the_appliance(lb: Balancer) -> None:
    policy = made(lb.policy(rules=[{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"}]))
    lb.activate()
    shown = lb.api("GET", f"{L7}/{policy['id']}").json()["l7policy"]
    assert (shown["provisioning_status"], shown["operating_status"]) == ("ACTIVE", "ONLINE")
    rule = lb.api("GET", f"{L7}/{policy['id']}/rules").json()["rules"][0]
    assert (rule["provisioning_status"], rule["operating_status"]) == ("ACTIVE", "ONLINE")
    down = lb.api("PUT", f"{L7}/{policy['id']}", {"l7policy": {"admin_state_up": False}})
    assert down.json()["l7policy"]["provisioning_status"] == "PENDING_UPDATE"
    lb.activate()
    shown = lb.api("GET", f"{L7}/{policy['id']}").json()["l7policy"]
    assert (shown["provisioning_status"], shown["operating_status"]) == ("ACTIVE", "OFFLINE")
    # An appliance that failed: what was pending is ERROR.
    lb.api("PUT", f"{L7}/{policy['id']}", {"l7policy": {"admin_state_up": True}})
    with Session(lb.engine) as session:
        write_lb_statuses(session, lb_driver.appliance_id(lb.id), State.ERROR, None)
        session.commit()
    shown = lb.api("GET", f"{L7}/{policy['id']}").json()["l7policy"]
    assert shown["provisioning_status"] == "ERROR"


def test_listener_and_cascade_deletes_take_policies_and_rules(lb: Balancer) -> None:
    policy = made(lb.policy(rules=[{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"}]))
    rule_id = policy["rules"][0]["id"]
    lb.activate()
    assert lb.api("DELETE", f"/v2/lbaas/listeners/{lb.listener['id']}").status_code == 204
    assert fault(lb.api("GET", f"{L7}/{policy['id']}"))[0] == 404
    with Session(lb.engine) as session:
        assert session.get(L7Rule, rule_id) is None
    lb.activate()
    listener = lb.post("listeners", "listener", protocol="HTTP", protocol_port=8080)
    policy = made(
        lb.policy(
            listener_id=listener["id"],
            action="REDIRECT_TO_POOL",
            redirect_pool_id=lb.api_pool["id"],
            rules=[{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"}],
        )
    )
    lb.activate()
    assert lb.api("DELETE", f"{LBS}/{lb.id}?cascade=true").status_code == 204
    with Session(lb.engine) as session:
        assert session.get(L7Policy, policy["id"]) is None
        assert session.get(L7Rule, policy["rules"][0]["id"]) is None


def test_what_the_api_accepts_haproxy_serves(lb: Balancer, tmp_path: Path) -> None:
    """Every kind of rule and action, with values haproxy's config parser
    would read otherwise (quotes, `#`, `$`, backslashes, spaces), becomes a
    config that passes `haproxy -c` and says what was asked."""
    rules = [
        {"type": "HOST_NAME", "compare_type": "ENDS_WITH", "value": ".example.com"},
        {"type": "PATH", "compare_type": "REGEX", "value": "^/a b#c$d\\.e'f\"g$"},
        {"type": "FILE_TYPE", "compare_type": "EQUAL_TO", "value": "jpg"},
        {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-A#$", "value": '"two words"'},
        {"type": "COOKIE", "compare_type": "CONTAINS", "key": "sid", "value": "a'b#c$"},
        {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/x'y\"z\\#", "invert": True},
    ]
    made(lb.policy(name="deny", rules=rules))
    lb.activate()
    made(
        lb.policy(
            action="REDIRECT_TO_URL",
            redirect_url="https://a.example/p?q=1&r='x'#frag",
            redirect_http_code=308,
            rules=[{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/old"}],
        )
    )
    lb.activate()
    made(
        lb.policy(
            action="REDIRECT_PREFIX",
            redirect_prefix="http://b.example/$HOME",
            rules=[{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/older"}],
        )
    )
    lb.activate()
    made(
        lb.policy(
            action="REDIRECT_TO_POOL",
            redirect_pool_id=lb.api_pool["id"],
            position=1,
            rules=[{"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}],
        )
    )
    lb.activate()
    # Without a rule, or disabled: not served.
    made(lb.policy(name="empty"))
    lb.activate()
    made(lb.policy(name="off", admin_state_up=False, rules=rules[:1]))
    with Session(lb.engine) as session:
        row = session.get(LoadBalancer, lb.id)
        assert row is not None
        config = lb_driver.plan(session, row).config
    assert config is not None and validate_semantics(config) == []
    section = config.loadbalancer
    assert section is not None
    listener = next(i for i in section.listeners if i.id == lb.listener["id"])
    assert [p.action for p in listener.l7policies] == [
        "REDIRECT_TO_POOL",
        "REJECT",
        "REDIRECT_TO_URL",
        "REDIRECT_PREFIX",
    ]
    header = next(r for r in listener.l7policies[1].rules if r.type == "HEADER")
    assert header.value == "two words"  # Octavia's quoted form: its content
    text = render_loadbalancer(section, tmp_path)
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    checked = haproxy_check(path)
    assert checked.returncode == 0, text + checked.stderr
    # Grouped as haproxy runs them: no warning about their order.
    assert "processed before" not in checked.stderr, checked.stderr
    assert f"\tuse_backend {lb.api_pool['id']} if" in text
    assert f"backend {lb.api_pool['id']}\n" in text
    assert "\tredirect code 308 location 'https://a.example/p?q=1&r='\\''x'\\''#frag' if" in text
    assert "\tredirect code 302 prefix 'http://b.example/$HOME' if" in text


def test_a_redirect_pool_is_in_the_status_tree_under_its_listener(lb: Balancer) -> None:
    def tree_pools() -> list[str]:
        tree = lb.api("GET", f"{LBS}/{lb.id}/status").json()["statuses"]["loadbalancer"]
        listener = next(i for i in tree["listeners"] if i["id"] == lb.listener["id"])
        return [p["id"] for p in listener["pools"]]

    def pool_listeners() -> list[dict[str, str]]:
        shown: list[dict[str, str]] = lb.api("GET", f"/v2/lbaas/pools/{lb.api_pool['id']}").json()[
            "pool"
        ]["listeners"]
        return shown

    # Without a rule, a policy redirects nothing (Octavia's `Listener.pools`).
    policy = made(lb.policy(action="REDIRECT_TO_POOL", redirect_pool_id=lb.api_pool["id"]))
    lb.activate()
    assert tree_pools() == [lb.web["id"]] and pool_listeners() == []
    made(lb.rule(policy["id"]), "rule")
    lb.activate()
    assert tree_pools() == [lb.web["id"], lb.api_pool["id"]]
    assert pool_listeners() == [{"id": lb.listener["id"]}]
