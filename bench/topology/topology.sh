#!/usr/bin/env bash
# topology.sh up|down|status
#
# The one-machine topology where MSG_ZEROCOPY / io_uring SEND_ZC are really not
# copied: two network namespaces joined by a veth pair, with an XDP_PASS program
# on the RECEIVING veth.  With XDP attached, veth converts every incoming skb
# that carries page frags into its own page_pool pages (a copy done by the
# receiver's NAPI, standing in for a NIC's DMA) and frees the sender's skb, so
# the zero-copy completion comes back without SO_EE_CODE_ZEROCOPY_COPIED.
#
#   namespace zc-tx : veth zctx0  198.18.0.1/30   (sender side, run it on CPU 0)
#   namespace zc-rx : veth zcrx0  198.18.0.2/30   (receiver side, XDP_PASS,
#                                                   threaded NAPI pinned to CPU 1)
#
# 198.18.0.0/15 is the benchmarking test-net (RFC 2544); the addresses exist only
# inside the two namespaces this script creates, nothing is routed off the box.
#
# up      create whatever is missing (idempotent), then print status
# down    delete both namespaces (this destroys the veth pair and the XDP program)
# status  print the state; exit 0 only if everything is in place
#
# Environment: ZC_TOPO_NAPI_CPU (default 1), ZC_TOPO_MTU (default 1500),
# ZC_TOPO_TCP_CC (TCP congestion control of both namespaces; default: what a
# new namespace gets, the host's; it must be in the host's
# net.ipv4.tcp_allowed_congestion_control),
# ZC_TOPO_FRAGS=1 to load the program with BPF_F_XDP_HAS_FRAGS (needed for an
# MTU above ~3.5 KiB with XDP on veth), ZC_TOPO_BUILD (where xdp_pass is built,
# default /tmp/zc-topology), CC (default gcc).  Needs root (CAP_NET_ADMIN,
# CAP_SYS_ADMIN for `ip netns`, CAP_BPF/CAP_SYS_ADMIN for the program).
set -euo pipefail

NS_TX=zc-tx
NS_RX=zc-rx
DEV_TX=zctx0
DEV_RX=zcrx0
ADDR_TX=198.18.0.1
ADDR_RX=198.18.0.2
PREFIX=30
NAPI_CPU=${ZC_TOPO_NAPI_CPU:-1}
MTU=${ZC_TOPO_MTU:-1500}
FRAGS=${ZC_TOPO_FRAGS:-0}
TCP_CC=${ZC_TOPO_TCP_CC:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${ZC_TOPO_BUILD:-/tmp/zc-topology}
XDP_PASS=$BUILD/xdp_pass
CC=${CC:-gcc}

log() { printf 'topology: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ns_exists() { [ -e "/run/netns/$1" ]; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
dev_in_ns() { in_ns "$1" ip link show dev "$2" >/dev/null 2>&1; }

build_xdp_pass() {
	mkdir -p "$BUILD"
	if [ ! -x "$XDP_PASS" ] || [ "$HERE/xdp_pass.c" -nt "$XDP_PASS" ]; then
		"$CC" -std=c11 -O2 -Wall -Wextra -Werror -o "$XDP_PASS" "$HERE/xdp_pass.c" ||
			die "cannot build $XDP_PASS"
	fi
}

xdp_prog_id() { # prints the prog id attached to DEV_RX, or nothing
	in_ns "$NS_RX" ip -d link show dev "$DEV_RX" 2>/dev/null |
		sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p' | head -n1
}

napi_pids() { # pids of the NAPI kthreads of DEV_RX ("napi/zcrx0-<id>")
	local f comm
	for f in /proc/[0-9]*/comm; do
		comm=$(cat "$f" 2>/dev/null) || continue
		case $comm in "napi/$DEV_RX-"*) f=${f#/proc/}; echo "${f%/comm}" ;; esac
	done
}

up() {
	[ "$(id -u)" = 0 ] || die "must run as root (namespaces, veth, bpf)"
	command -v ip >/dev/null || die "iproute2 'ip' not found"
	build_xdp_pass

	local ns
	for ns in "$NS_TX" "$NS_RX"; do
		ns_exists "$ns" || { log "creating namespace $ns"; ip netns add "$ns"; }
		in_ns "$ns" ip link set lo up
		# keep IPv6 (DAD, router solicitations) out of the measurements
		in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 || true
		in_ns "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 || true
		if [ -n "$TCP_CC" ]; then
			in_ns "$ns" sysctl -qw "net.ipv4.tcp_congestion_control=$TCP_CC" ||
				die "cannot set TCP congestion control $TCP_CC in $ns (allowed here: $(sysctl -n net.ipv4.tcp_allowed_congestion_control))"
		fi
	done

	if ! dev_in_ns "$NS_TX" "$DEV_TX" || ! dev_in_ns "$NS_RX" "$DEV_RX"; then
		# half-made pair: remove what is there, then create it whole
		in_ns "$NS_TX" ip link del "$DEV_TX" 2>/dev/null || true
		in_ns "$NS_RX" ip link del "$DEV_RX" 2>/dev/null || true
		log "creating veth $DEV_TX@$NS_TX <-> $DEV_RX@$NS_RX"
		# one queue each way: one NAPI instance, one kthread to pin
		in_ns "$NS_TX" ip link add "$DEV_TX" numtxqueues 1 numrxqueues 1 type veth \
			peer name "$DEV_RX" netns "$NS_RX" numtxqueues 1 numrxqueues 1
	fi
	in_ns "$NS_TX" ip link set dev "$DEV_TX" mtu "$MTU"
	in_ns "$NS_RX" ip link set dev "$DEV_RX" mtu "$MTU"
	in_ns "$NS_TX" ip addr replace "$ADDR_TX/$PREFIX" dev "$DEV_TX"
	in_ns "$NS_RX" ip addr replace "$ADDR_RX/$PREFIX" dev "$DEV_RX"

	# XDP_PASS on the receiving veth, native mode; this also gives it NAPI
	if [ -z "$(xdp_prog_id)" ]; then
		log "attaching XDP_PASS to $DEV_RX"
		if [ "$FRAGS" = 1 ]; then
			in_ns "$NS_RX" "$XDP_PASS" attach "$DEV_RX" frags
		else
			in_ns "$NS_RX" "$XDP_PASS" attach "$DEV_RX"
		fi
	fi
	in_ns "$NS_TX" ip link set dev "$DEV_TX" up
	in_ns "$NS_RX" ip link set dev "$DEV_RX" up

	# threaded NAPI on the receiving veth (sysfs of the namespace: ip netns exec
	# mounts it), then pin its kthread(s) to NAPI_CPU
	in_ns "$NS_RX" sh -c "echo 1 > /sys/class/net/$DEV_RX/threaded" ||
		die "cannot enable threaded NAPI on $DEV_RX"
	local pids="" i
	for i in $(seq 1 50); do # bounded: the kthread appears at once, wait <= 5 s
		pids=$(napi_pids)
		[ -n "$pids" ] && break
		sleep 0.1
	done
	[ -n "$pids" ] || die "no napi/$DEV_RX-* kthread found"
	for i in $pids; do taskset -pc "$NAPI_CPU" "$i" >/dev/null; done

	# static neighbours: no ARP traffic during measurements
	local mac_tx mac_rx
	mac_tx=$(in_ns "$NS_TX" cat "/sys/class/net/$DEV_TX/address")
	mac_rx=$(in_ns "$NS_RX" cat "/sys/class/net/$DEV_RX/address")
	in_ns "$NS_TX" ip neigh replace "$ADDR_RX" lladdr "$mac_rx" dev "$DEV_TX" nud permanent
	in_ns "$NS_RX" ip neigh replace "$ADDR_TX" lladdr "$mac_tx" dev "$DEV_RX" nud permanent
	# one TCP SYN across (refused, no listener): proves the path, bounded by timeout
	timeout 5 ip netns exec "$NS_TX" bash -c "exec 3<>/dev/tcp/$ADDR_RX/9" 2>/dev/null || true
	local rxp
	rxp=$(in_ns "$NS_RX" cat "/sys/class/net/$DEV_RX/statistics/rx_packets")
	[ "$rxp" -gt 0 ] || die "no packet reached $DEV_RX"
	status
}

down() {
	local ns
	for ns in "$NS_RX" "$NS_TX"; do
		if ns_exists "$ns"; then log "deleting namespace $ns"; ip netns del "$ns"; fi
	done
	return 0
}

status() {
	local ok=0 ns pid id thr
	for ns in "$NS_TX" "$NS_RX"; do
		if ns_exists "$ns"; then echo "netns $ns: present"; else echo "netns $ns: missing"; ok=1; fi
	done
	if ns_exists "$NS_TX" && dev_in_ns "$NS_TX" "$DEV_TX"; then
		echo "$NS_TX: $(in_ns "$NS_TX" ip -br addr show dev "$DEV_TX")"
	else
		echo "$NS_TX: $DEV_TX missing"; ok=1
	fi
	if ns_exists "$NS_RX" && dev_in_ns "$NS_RX" "$DEV_RX"; then
		echo "$NS_RX: $(in_ns "$NS_RX" ip -br addr show dev "$DEV_RX")"
		echo "$NS_RX: mtu $(in_ns "$NS_RX" cat /sys/class/net/$DEV_RX/mtu)"
		echo "TCP congestion control: $NS_TX $(in_ns "$NS_TX" sysctl -n net.ipv4.tcp_congestion_control)," \
			"$NS_RX $(in_ns "$NS_RX" sysctl -n net.ipv4.tcp_congestion_control)"
		id=$(xdp_prog_id)
		if [ -n "$id" ]; then echo "$DEV_RX: xdp (driver mode) prog id $id"; else echo "$DEV_RX: no xdp program"; ok=1; fi
		thr=$(in_ns "$NS_RX" cat /sys/class/net/$DEV_RX/threaded 2>/dev/null || echo '?')
		echo "$DEV_RX: threaded napi = $thr"
		[ "$thr" = 1 ] || [ "$thr" = enabled ] || ok=1
		local pids
		pids=$(napi_pids)
		[ -n "$pids" ] || { echo "$DEV_RX: no napi kthread"; ok=1; }
		for pid in $pids; do
			echo "napi kthread $pid ($(cat "/proc/$pid/comm")): $(taskset -pc "$pid" | sed 's/.*: //')"
			[ "$(taskset -pc "$pid" | sed 's/.*: //')" = "$NAPI_CPU" ] || ok=1
		done
	else
		echo "$NS_RX: $DEV_RX missing"; ok=1
	fi
	if [ $ok = 0 ]; then echo "topology: up"; else echo "topology: incomplete"; fi
	return $ok
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
