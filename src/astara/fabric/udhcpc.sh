#!/bin/sh
# DHCP client hook for workload ports (busybox udhcpc). It configures only the
# interface it was started for and writes DNS servers to the namespace's own
# resolv.conf ($ASTARA_RESOLV_CONF), never the host's /etc/resolv.conf.
set -u
iface="$interface"
case "$1" in
deconfig)
	ip -4 addr flush dev "$iface" scope global
	;;
bound|renew)
	prefix=$(echo "${subnet:-255.255.255.0}" | awk -F. '{
		n = 0; for (i = 1; i <= 4; i++) { b = $i; while (b > 0) { n += b % 2; b = int(b / 2) } } print n }')
	current=$(ip -4 -o addr show dev "$iface" scope global | awk '{print $4}')
	if [ "$current" != "$ip/$prefix" ]; then
		ip -4 addr flush dev "$iface" scope global
		ip -4 addr add "$ip/$prefix" dev "$iface"
	fi
	ip -4 route flush dev "$iface" proto dhcp 2>/dev/null
	if [ -n "${staticroutes:-}" ]; then
		# RFC 3442: "destination/len gateway" pairs; they replace option 3.
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			ip -4 route replace "$1" via "$2" dev "$iface" proto dhcp
			shift 2
		done
	elif [ -n "${router:-}" ]; then
		for gw in $router; do
			ip -4 route replace default via "$gw" dev "$iface" proto dhcp
			break
		done
	fi
	if [ -n "${ASTARA_RESOLV_CONF:-}" ]; then
		# Keep the IPv6 servers the DHCPv6 client wrote; write in place so
		# that namespaces which bind-mounted the file see the change.
		new=""
		for server in ${dns:-}; do
			new="${new:+$new
}nameserver $server"
		done
		if [ -f "$ASTARA_RESOLV_CONF" ]; then
			kept=$(grep '^nameserver .*:' "$ASTARA_RESOLV_CONF")
			new="$new${kept:+${new:+
}$kept}"
		fi
		printf '%s\n' "$new" > "$ASTARA_RESOLV_CONF"
	fi
	;;
esac
exit 0
