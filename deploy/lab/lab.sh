#!/usr/bin/env bash
# A single-node dpfleet lab in network namespaces.
#
#   lab.sh up       start (or complete) the lab: node, VMs, router, provisioning, DHCP, ping
#   lab.sh status   show what runs
#   lab.sh down     tear everything down
#
# Topology (every box is a network namespace):
#
#   dpf-vm1 eth0 ──veth── br-dtapvf_0 ── dtapvf_0 ┐
#   dpf-vm2 eth0 ──veth── br-dtapvf_1 ── dtapvf_1 ├─ dpfleet-node (dpf-node1)
#   dpf-router ul0 ─veth── br-dtap0 ──── dtap0    ┘
#
# The node's ports are DPDK net_tap devices. They stay in dpf-node1: the TAP PMD
# configures its interface by name (ioctl) in the namespace it was created in, so a TAP
# moved to another namespace keeps passing packets but can no longer be started again
# (a port start after the move fails with ENODEV; VF ports are started by
# CreateInterface). Each TAP is therefore bridged inside dpf-node1 to a veth pair whose
# other end lives in the VM or router namespace.
#
# Environment: DPFLEET_NODE_BIN and DPFLEETCTL_BIN (default: built here, release),
# LAB_LCORES (default 0,1), LAB_METRICS_PORT (default 9100, 0 = off).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
run=/run/dpfleet-lab
node_ns=dpf-node1
router_ns=dpf-router
vm_ns=(dpf-vm1 dpf-vm2)
vni=100
node_ul=fc00:1::1
router_ul=fc00::ffff
router_sid=fc00::d4      # the router's tunnel endpoint: decapsulates IPv4-in-IPv6 (seg6local End.DX4)
inet_ip=192.0.2.1        # "the internet": an address behind the router
vm_ip=(10.100.1.1 10.100.1.2)
vm_ip6=(2000:100:1::1 2000:100:1::2)
vm_mac=(02:00:00:00:01:01 02:00:00:00:01:02)
lcores=${LAB_LCORES:-0,1}
metrics_port=${LAB_METRICS_PORT:-9100}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'lab.sh: %s\n' "$*" >&2; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ns_exists() { [[ -e /run/netns/$1 ]]; }

# Builds (release) and returns the node and CLI binaries, unless DPFLEET_NODE_BIN is set.
build_bins() {
	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dpfleet/target}
	if [[ -n ${DPFLEET_NODE_BIN:-} ]]; then
		[[ -x $DPFLEET_NODE_BIN ]] || die "DPFLEET_NODE_BIN=$DPFLEET_NODE_BIN is not executable"
		node_bin=$DPFLEET_NODE_BIN
		ctl_bin=${DPFLEETCTL_BIN:-$(dirname "$DPFLEET_NODE_BIN")/dpfleetctl}
		[[ -x $ctl_bin ]] || die "no dpfleetctl beside $DPFLEET_NODE_BIN: set DPFLEETCTL_BIN"
		return
	fi
	say "building dpfleet-node and dpfleetctl (release; the first build takes a few minutes)"
	(cd "$repo" && cargo build --release -q -p dpfleet-node -p dpfleetctl)
	node_bin=$CARGO_TARGET_DIR/release/dpfleet-node
	ctl_bin=$CARGO_TARGET_DIR/release/dpfleetctl
}

# dpfleetctl against the node's API, run inside the node's namespace.
ctl() { in_ns "$node_ns" "$ctl_bin" --node "http://[::1]:1337" "$@"; }

node_pid() {
	local pid
	[[ -f $run/node1.pid ]] || return 1
	pid=$(<"$run/node1.pid")
	[[ -d /proc/$pid ]] && grep -q dpfleet-node "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

ensure_ns() { ns_exists "$1" || ip netns add "$1"; ip -n "$1" link set lo up; }

# Bridge TAP $1 (in the node namespace, kernel-side MAC $5) to interface $3 in namespace
# $2, MAC $4.
ensure_wire() {
	local tap=$1 peer_ns=$2 peer_if=$3 peer_mac=$4 tap_mac=$5 br=br-$1 veth=n-${3}-${2#dpf-}
	veth=${veth:0:15}
	if ! ip -n "$node_ns" link show "$br" >/dev/null 2>&1; then
		ip -n "$node_ns" link add "$br" type bridge
	fi
	in_ns "$node_ns" sysctl -qw "net.ipv6.conf.$br.disable_ipv6=1"
	if ! ip -n "$peer_ns" link show "$peer_if" >/dev/null 2>&1; then
		ip -n "$node_ns" link del "$veth" 2>/dev/null || true
		ip -n "$node_ns" link add "$veth" type veth peer name "$peer_if" netns "$peer_ns"
	fi
	ip -n "$peer_ns" link set "$peer_if" address "$peer_mac"
	# The TAP's kernel side starts with the DPDK port's own MAC; as a bridge port, the
	# bridge would take frames to that MAC as its own instead of passing them to the node.
	ip -n "$node_ns" link set "$tap" address "$tap_mac"
	for dev in "$tap" "$veth"; do
		in_ns "$node_ns" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1"
		ip -n "$node_ns" addr flush dev "$dev"
		ip -n "$node_ns" link set "$dev" master "$br" up
	done
	ip -n "$node_ns" link set "$br" up
	ip -n "$peer_ns" link set "$peer_if" up
}

start_node() {
	local bin=$1 pid args
	if pid=$(node_pid); then
		say "dpfleet-node already running (pid $pid)"; return
	fi
	args=(-l "$lcores" --huge-unlink --file-prefix="$node_ns" --no-pci)
	local free size
	free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
	size=$(awk '/Hugepagesize/ {print $2}' /proc/meminfo)
	((free * size >= 512 * 1024)) || args+=(--no-huge -m 512)
	args+=(--vdev=net_tap0,iface=dtap0,mac=22:22:22:22:22:00
		--vdev=net_tap1,iface=dtapvf_0,mac=66:66:66:66:66:00
		--vdev=net_tap2,iface=dtapvf_1,mac=66:66:66:66:66:01
		-- --pf0=dtap0 --vf-pattern=dtapvf_ --nic-type=tap --ipv6="$node_ul" --enable-ipv6-overlay
		--dhcp-mtu=1450 --dhcp-dns=8.8.4.4 --dhcp-dns=8.8.8.8 --dhcpv6-dns=2001:4860:4860::6464
		--grpc-port=1337 --no-stats --no-offload)
	((metrics_port == 0)) || args+=(--metrics-port="$metrics_port")
	say "starting $bin in $node_ns (log: $run/node1.log)"
	echo "$bin ${args[*]}" >"$run/node1.cmdline"
	ip netns exec "$node_ns" setsid "$bin" "${args[@]}" </dev/null >"$run/node1.log" 2>&1 &
	pid=$!
	echo "$pid" >"$run/node1.pid"
	local i
	for i in $(seq 1 100); do
		# (Right after the fork the child is still this shell, so only check it lives.)
		[[ -d /proc/$pid ]] || { tail -30 "$run/node1.log" >&2; die "dpfleet-node exited during start"; }
		# dpfleetctl exits 1 when it cannot reach the node, 2 when the node answers with an
		# error (before Initialize every call is refused: the API is up).
		local rc=0
		ctl --timeout 1s node check-init >/dev/null 2>&1 || rc=$?
		if ip -n "$node_ns" link show dtapvf_1 >/dev/null 2>&1 && ((rc != 1)); then
			return
		fi
		sleep 0.2
	done
	tail -30 "$run/node1.log" >&2
	die "dpfleet-node did not come up within 20 s"
}

ensure_busybox() {
	command -v busybox >/dev/null && return
	say "installing busybox (udhcpc, ping)"
	apt-get install -y -qq busybox >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq busybox >/dev/null; }
}

lease() { # ns
	in_ns "$1" busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -O staticroutes -O mtu \
		-s "$here/udhcpc.script" >"$run/$1.dhcp.log" 2>&1 || {
		cat "$run/$1.dhcp.log" >&2; die "no DHCP lease in $1"; }
}

# The router namespace plays the underlay router and the internet behind it. Linux has no
# ip6tnl here, but SRv6 lightweight tunnels make and take the same packets: traffic the
# node encapsulates towards $router_sid is decapsulated (End.DX4) and delivered to
# $inet_ip; replies to each VM are encapsulated towards that VM's underlay address
# (seg6 encap.red with one segment = plain IPv4-in-IPv6). dpservice-style nodes do not
# answer ND on their PF, so the router gets static neighbour entries for them.
router_tunnel() {
	in_ns "$router_ns" sysctl -qw net.ipv6.conf.all.seg6_enabled=1 net.ipv6.conf.ul0.seg6_enabled=1 \
		net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	ip -n "$router_ns" addr replace "$inet_ip/32" dev lo
	ip -n "$router_ns" -6 route replace "$router_sid/128" encap seg6local action End.DX4 nh4 "$inet_ip" dev ul0
	local i ul
	for i in 0 1; do
		ul=$(ctl --output json node iface get "vm$((i + 1))" | sed -n 's/.*"underlay_route": *"\([^"]*\)".*/\1/p')
		[[ -n $ul ]] || die "no underlay address for vm$((i + 1))"
		ip -n "$router_ns" -6 neigh replace "$ul" lladdr 22:22:22:22:22:00 dev ul0
		ip -n "$router_ns" route replace "${vm_ip[i]}/32" encap seg6 mode encap.red segs "$ul" dev ul0
	done
}

cmd_up() {
	((EUID == 0)) || die "needs root (namespaces, TAP devices)"
	mkdir -p "$run"
	bash "$repo/scripts/setup.sh"
	build_bins
	ensure_busybox

	say "namespaces"
	for ns in "$node_ns" "$router_ns" "${vm_ns[@]}"; do ensure_ns "$ns"; done
	start_node "$node_bin"

	say "wiring TAPs to the VM and router namespaces"
	ensure_wire dtapvf_0 dpf-vm1 eth0 "${vm_mac[0]}" 02:fe:00:00:01:00
	ensure_wire dtapvf_1 dpf-vm2 eth0 "${vm_mac[1]}" 02:fe:00:00:01:01
	ensure_wire dtap0 "$router_ns" ul0 02:00:00:00:02:00 02:fe:00:00:02:00
	ip -n "$router_ns" addr replace "$router_ul/16" dev ul0 nodad

	say "provisioning over gRPC"
	ctl node check-init >/dev/null 2>&1 || ctl node init
	local i
	for i in 0 1; do
		ctl node iface get "vm$((i + 1))" >/dev/null 2>&1 ||
			ctl node iface create --id "vm$((i + 1))" --vni "$vni" --ipv4 "${vm_ip[i]}" \
				--ipv6 "${vm_ip6[i]}" --device "net_tap$((i + 1))"
	done
	ctl node route list --vni "$vni" | grep -q "0.0.0.0/0" ||
		ctl node route create --vni "$vni" --prefix 0.0.0.0/0 --next-hop "$router_sid" --next-hop-vni "$vni"
	ctl node route create --vni "$vni" --prefix ::/0 --next-hop "$router_ul" --next-hop-vni "$vni" \
		>/dev/null 2>&1 || true # IPv6 routes are not listed (as dpservice); 301 when it exists
	ctl node iface list

	say "router: tunnel endpoint $router_sid and $inet_ip behind it"
	router_tunnel

	say "DHCP in the VMs"
	for ns in "${vm_ns[@]}"; do
		lease "$ns"
		printf '%s: %s\n' "$ns" "$(ip -n "$ns" -4 -br addr show dev eth0)"
	done

	say "ping vm1 -> vm2 (through the node)"
	in_ns dpf-vm1 busybox ping -c 3 -W 2 "${vm_ip[1]}"
	say "ping vm2 -> $inet_ip (through the node, IPv4-in-IPv6 over the underlay, the router)"
	in_ns dpf-vm2 busybox ping -c 3 -W 2 "$inet_ip"

	cat <<-EOF

	The lab is up. Look around:
	  ip netns exec dpf-vm1 busybox ping ${vm_ip[1]}     # VM to VM through the node
	  ip netns exec dpf-vm1 ip route                     # the lease's routes
	  ip netns exec dpf-vm2 busybox ping $inet_ip         # VM to "the internet" through the tunnel
	  ip netns exec $router_ns tcpdump -ni ul0 ip6        # the encapsulated traffic on the underlay
	  The node API, with dpfleetctl inside the node's namespace:
	    ip netns exec $node_ns $ctl_bin node iface list
	    ip netns exec $node_ns $ctl_bin node route list --vni $vni
	    ip netns exec $node_ns $ctl_bin --output json node iface get vm1
	  ip netns exec $router_ns cat /proc/net/dev          # underlay traffic counters
	  tail -f $run/node1.log                           # the node's log
	EOF
	((metrics_port == 0)) || echo "  ip netns exec $node_ns busybox wget -qO- http://127.0.0.1:$metrics_port/metrics"
	echo "  $0 status | $0 down"
}

cmd_status() {
	local pid
	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dpfleet/target}
	ctl_bin=${DPFLEETCTL_BIN:-$CARGO_TARGET_DIR/release/dpfleetctl}
	if pid=$(node_pid); then
		echo "dpfleet-node: running, pid $pid, log $run/node1.log"
		echo "  $(cat "$run/node1.cmdline" 2>/dev/null)"
	else
		echo "dpfleet-node: not running"
	fi
	for ns in "$node_ns" "$router_ns" "${vm_ns[@]}"; do
		if ns_exists "$ns"; then
			echo "namespace $ns:"
			{ ip -n "$ns" -br addr | grep -v "^lo " || true; } | sed "s/^/  /"
		else
			echo "namespace $ns: absent"
		fi
	done
	if node_pid >/dev/null; then
		echo "interfaces:"; ctl node iface list 2>&1 | sed 's/^/  /' || true
		echo "routes of VNI $vni:"; ctl node route list --vni "$vni" 2>&1 | sed 's/^/  /' || true
	fi
}

cmd_down() {
	((EUID == 0)) || die "needs root"
	local pid i
	if pid=$(node_pid); then
		say "stopping dpfleet-node (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
		[[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$run/node1.pid"
	for ns in "${vm_ns[@]}" "$router_ns" "$node_ns"; do
		if ns_exists "$ns"; then
			say "deleting namespace $ns"
			ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
			ip netns del "$ns"
		fi
	done
	rm -rf "/var/run/dpdk/$node_ns"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) sed -n '2,7p' "$0"; exit 2 ;;
esac
