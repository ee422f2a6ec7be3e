"""The extensions Astara implements, and only those: clients probe aliases
and change behaviour on what they find (§3.10)."""

from __future__ import annotations

from typing import Any

_UPDATED = "2026-11-25T00:00:00-00:00"


def _extension(alias: str, name: str, description: str, updated: str = _UPDATED) -> dict[str, Any]:
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": updated,
        "links": [],
    }


EXTENSIONS: dict[str, dict[str, Any]] = {
    e["alias"]: e
    for e in (
        _extension(
            "project-id",
            "project_id field enabled",
            "Extension that indicates that project_id field is enabled.",
        ),
        _extension(
            "external-net",
            "Neutron external network",
            "Adds external network attribute to network resource.",
        ),
        _extension("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
        _extension(
            "standard-attr-description",
            "standard-attr-description",
            "Extension to add descriptions to standard attributes",
        ),
        _extension(
            "standard-attr-timestamp",
            "Resource timestamps",
            "Adds created_at and updated_at fields to all Neutron resources"
            " that have Neutron standard attributes.",
        ),
        _extension(
            "standard-attr-revisions",
            "Resource revision numbers",
            "This extension will display the revision number of neutron resources.",
        ),
        _extension(
            "router",
            "Neutron L3 Router",
            "Router abstraction for basic L3 forwarding between L2 Neutron networks"
            " and access to external networks via a NAT gateway.",
        ),
        _extension(
            "ext-gw-mode",
            "Neutron L3 Configurable external gateway mode",
            "Extension of the router abstraction for specifying whether SNAT"
            " should occur on the external gateway",
        ),
        _extension("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
        _extension(
            "standard-attr-tag",
            "Tag support for resources with standard attribute: subnet, trunk, router,"
            " network, policy, subnetpool, port, security_group, floatingip",
            "Enables to set tag on resources with standard attribute.",
        ),
        _extension(
            "revision-if-match",
            "If-Match constraints based on revision_number",
            "Extension indicating that If-Match based on revision_number is supported.",
        ),
        _extension(
            "quotas",
            "Quota management support",
            "Expose functions for quotas management per project",
        ),
        _extension(
            "quota_details",
            "Quota details management support",
            "Expose functions for quotas usage statistics per project",
        ),
        _extension(
            "pagination",
            "Pagination support",
            "Extension that indicates that pagination is enabled.",
        ),
        _extension(
            "sorting", "Sorting support", "Extension that indicates that sorting is enabled."
        ),
        _extension(
            "filter-validation",
            "Filter parameters validation",
            "Provides validation on filter parameters.",
        ),
        _extension(
            "provider",
            "Provider Network",
            "Expose mapping of virtual networks to physical networks",
        ),
        _extension(
            "net-mtu-writable",
            "Network MTU (writable)",
            "Provides a writable MTU attribute for a network resource.",
        ),
        _extension("agent", "agent", "The agent management extension."),
        _extension("availability_zone", "Availability Zone", "The availability zone extension."),
        _extension(
            "router_availability_zone",
            "Router Availability Zone",
            "Availability zone support for router.",
        ),
        # neutron-lib's own names, descriptions and dates for these two.
        _extension(
            "l3-ha",
            "HA Router extension",
            "Adds HA capability to routers.",
            "2014-04-26T00:00:00-00:00",
        ),
        _extension(
            "l3_agent_scheduler",
            "L3 Agent Scheduler",
            "Schedule routers among l3 agents",
            "2013-02-07T10:00:00-00:00",
        ),
        _extension(
            "security-group",
            "security-group",
            "The security groups extension.",
        ),
        _extension(
            "port-security",
            "Port Security",
            "Provides port security",
        ),
        _extension(
            "allowed-address-pairs",
            "Allowed Address Pairs",
            "Provides allowed address pairs",
        ),
        _extension(
            "stateful-security-group",
            "Stateful security group",
            "Indicates if the security group is stateful or not",
        ),
        _extension(
            "security-groups-normalized-cidr",
            "Normalized CIDR field for security group rules",
            "Add new field with normalized remote_ip_prefix cidr in SG rule",
        ),
        _extension(
            "security-groups-remote-address-group",
            "Remote address group id field for security group rules",
            "Add new field of remote address group id in SG rules",
        ),
        _extension(
            "security-groups-rules-belongs-to-default-sg",
            "Security group rule belongs to the project's default security group",
            "Flag to determine if the security group rule belongs to the project's default"
            " security group",
        ),
        _extension(
            "port-security-groups-filtering",
            "Port filtering on security groups",
            "Provides security groups filtering when listing ports",
        ),
        _extension(
            "address-group",
            "Address group",
            "Support address group",
        ),
        _extension(
            "fwaas_v2",
            "FWaaS v2",
            "Provides support for firewall-as-a-service version 2",
        ),
        _extension(
            "sort-key-validation",
            "Sort keys validation",
            "Require sort_key to be sort-able attribute",
        ),
    )
}
