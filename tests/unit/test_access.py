"""Who the agent's peer check admits: a pure decision on the kernel's view
of the peer (uid, gid, supplementary groups)."""

from __future__ import annotations

import pytest

from astara.agent.access import AccessPolicy, Peer, UnknownGroup, parse_group


def peer(uid: int, gid: int = 100, groups: tuple[int, ...] = ()) -> Peer:
    return Peer(pid=1234, uid=uid, gid=gid, groups=frozenset(groups))


@pytest.mark.parametrize(
    ("policy", "who", "admitted"),
    [
        (AccessPolicy(), peer(0), True),
        (AccessPolicy(), peer(1000), False),
        (AccessPolicy(), peer(1000, gid=0, groups=(0,)), False),  # root's group is not root
        (AccessPolicy(), None, False),
        (AccessPolicy(4242), peer(0), True),
        (AccessPolicy(4242), peer(1000, groups=(10, 4242)), True),
        (AccessPolicy(4242), peer(1000, gid=4242), True),
        (AccessPolicy(4242), peer(1000, groups=(4243,)), False),
        (AccessPolicy(4242), None, False),
    ],
)
def test_refusal(policy: AccessPolicy, who: Peer | None, admitted: bool) -> None:
    assert (policy.refusal(who) is None) == admitted


def test_socket_mode_follows_the_group() -> None:
    assert AccessPolicy().socket_mode == 0o600
    assert AccessPolicy(4242).socket_mode == 0o660


def test_groups_by_name_or_bare_gid() -> None:
    assert parse_group("0") == 0
    assert parse_group("root") == 0
    assert parse_group("47113") == 47113
    with pytest.raises(UnknownGroup):
        parse_group("no-such-group-astara")
