#!/bin/sh
# DHCPv6 client hook for workload ports (dhcpcd). dhcpcd itself sets the
# interface's IPv6 addresses and routes; this hook only writes the DHCPv6 DNS
# servers into the namespace's own resolv.conf ($ASTARA_RESOLV_CONF), keeping
# the IPv4 servers the DHCPv4 client wrote there. It never touches the host's
# /etc/resolv.conf, nor any interface but its own ($ASTARA_IFNAME).
set -u
[ "${interface:-}" = "${ASTARA_IFNAME:-}" ] || exit 0
[ -n "${ASTARA_RESOLV_CONF:-}" ] || exit 0
case "${reason:-}" in
BOUND6 | RENEW6 | REBIND6 | REBOOT6 | INFORM6) servers="${new_dhcp6_name_servers:-}" ;;
EXPIRE6 | RELEASE6 | STOP6 | STOPPED | DEPARTED) servers="" ;;
*) exit 0 ;;
esac
kept=""
if [ -f "$ASTARA_RESOLV_CONF" ]; then
	kept=$(grep -v '^nameserver .*:' "$ASTARA_RESOLV_CONF")
fi
new="$kept"
for server in $servers; do
	new="${new:+$new
}nameserver $server"
done
# In place, not renamed over: namespaces that bind-mounted the file see it,
# and no temporary file appears in /etc/netns/<name>/ (which `ip netns exec`
# would try to bind-mount too).
printf '%s\n' "$new" > "$ASTARA_RESOLV_CONF"
exit 0
