"""Reading haproxy's master CLI (`show proc`) and stats socket (`show
info`): what tells a reload counted, refused, and its new worker serving."""

from __future__ import annotations

from astara.appliance.checks import haproxy_alerts
from astara.appliance.lbreload import MasterState, parse_show_info_pid, parse_show_proc

# haproxy 2.6.12's answers, as read in a namespace.
AFTER_RELOAD = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
15667           master          2 [failed: 1]   0d00h00m12s     2.6.12-1+deb12u4
# workers
15908           worker          0               0d00h00m00s     2.6.12-1+deb12u4
# old workers
15801           worker          1               0d00h00m07s     2.6.12-1+deb12u4
# programs

"""


def test_show_proc_gives_the_reloads_the_failures_and_the_current_worker() -> None:
    assert parse_show_proc(AFTER_RELOAD) == MasterState(15667, 2, 1, 15908)


def test_an_old_worker_is_not_the_current_one() -> None:
    draining_only = AFTER_RELOAD.replace(
        "15908           worker          0               0d00h00m00s     2.6.12-1+deb12u4\n", ""
    )
    assert parse_show_proc(draining_only) == MasterState(15667, 2, 1, None)


def test_anything_else_is_no_answer() -> None:
    assert parse_show_proc("") is None
    assert parse_show_proc("Unknown command: 'show proc'\n") is None


def test_show_info_names_the_worker_that_answered() -> None:
    assert parse_show_info_pid("Name: HAProxy\nVersion: 2.6.12\nPid: 15908\nUptime_sec: 0\n") == (
        15908
    )
    assert parse_show_info_pid("Name: HAProxy\n") is None


def test_haproxys_refusal_reads_as_its_alerts() -> None:
    """`haproxy -c` (2.6) says why only without `-q`, among notices."""
    stderr = (
        "[NOTICE]   (27737) : haproxy version is 2.6.12-1+deb12u4\n"
        "[NOTICE]   (27737) : path to executable is /usr/sbin/haproxy\n"
        "[ALERT]    (27737) : config : parsing [/tmp/x/loadbalancer.cfg:17] : timer overflow"
        " in argument '3000000000' to 'timeout client'\n"
        "[ALERT]    (27737) : config : Fatal errors found in configuration.\n"
    )
    assert haproxy_alerts(stderr) == (
        "parsing [/tmp/x/loadbalancer.cfg:17] : timer overflow in argument '3000000000' to"
        " 'timeout client'; Fatal errors found in configuration."
    )
