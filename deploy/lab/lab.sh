#!/usr/bin/env bash
# A three-node dpfleet lab on one machine, in network namespaces.
#
#   lab.sh up       start (or complete) the lab, provision it, show traffic flowing
#   lab.sh status   show what runs and how to look around
#   lab.sh down     tear everything down
#
# Topology (every box is a network namespace; see docs/lab.md):
#
#        dpf-vm1            dpf-vm2  dpf-web2          dpf-vm3  dpf-web3
#           │                  │        │                 │        │
#     ┌─dtapvf_0──┐      ┌─dtapvf_0─dtapvf_1─┐      ┌─dtapvf_0─dtapvf_1─┐
#     │ dpf-node1 │      │     dpf-node2     │      │     dpf-node3     │
#     │ fc00:1::1 │      │     fc00:2::1     │      │     fc00:3::1     │
#     └─dtap0──mgmt0     └─dtap0──────mgmt0──┘      └─dtap0──────mgmt0──┘
#         │      └──────────────┼─────┴── dpf-mgmt (bridge, root ns) ─┼───┘   10.254.0.0/24
#        ul1                   ul2      coordinators 127.0.0.1:700x  ul3
#         └──────────────── dpf-router ───────────────────────────────┘
#                               │ inet0 192.0.2.254
#                            dpf-inet 192.0.2.1 (servers and the client)
#
# Each node's ports are DPDK net_tap devices. They stay in their node's namespace: the
# TAP PMD configures its interface by name (ioctl) in the namespace it was created in,
# so a TAP moved to another namespace keeps passing packets but can no longer be started
# again (a port start after the move fails with ENODEV; VF ports are started by
# CreateInterface). Each TAP is therefore bridged inside its node's namespace to a veth
# pair whose other end lives in the VM or router namespace.
#
# The fleet is driven by the coordinators: they gossip with the nodes (chitchat over
# the management network), register them, and their leader's reconciler provisions every
# node through the node API. The script only talks to the cluster API (dpfleetctl
# --coordinator ... cluster ...): a VNI, the interfaces on chosen nodes, a NAT gateway
# 203.0.113.10 with vm1, vm2 and vm3 attached (a port block each; every other node gets
# a neighbour NAT for it), a load balancer 203.0.113.20:80 with targets web2 (node2) and
# web3 (node3) whose Maglev table the coordinator fixes, and the default route to the
# router. The router spreads replies to the NAT IP and connections to the VIP over all
# three nodes (an IPv4 multipath route whose next hops each encapsulate to another
# node), to the underlay addresses the coordinator chose (read from the cluster API).
#
# Environment: DPFLEET_NODE_BIN, DPFLEETCTL_BIN, DPFLEET_COORDINATOR_BIN (default: built
# here, release), LAB_LCORES (default 0,1; the nodes share them, idle workers back off).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
run=/run/dpfleet-lab     # pids, logs, leases, pcaps
state=/var/lib/dpfleet-lab # coordinator data
nodes=(1 2 3)
router_ns=dpf-router
inet_ns=dpf-inet
mgmt_br=dpf-mgmt
mgmt_net=10.254.0        # node N is .N, the root namespace .254
vni=100
router_ul=fc00::ffff     # the router's underlay address (source of its tunnels)
router_sid=fc00::d4      # the router's tunnel endpoint: decapsulates IPv4-in-IPv6
inet_ip=192.0.2.1        # "the internet": servers and the client, behind the router
inet_gw=192.0.2.254
nat_ip=203.0.113.10      # the NAT gateway's public IP
vip=203.0.113.20         # the load balancer's public IP (port 80/tcp)
lb_id=web
grpc_port=1337
metrics_port=9100
gossip_port=7946         # each node gossips on $mgmt_net.N:7946; coordinator C on $mgmt_net.254:(7945+C)
nat_gw=gw                # the NAT gateway's id in the cluster
nat_pool_min=1024        # its port pool [min, max) and block size
nat_pool_max=9216
nat_block=1024
node_down_after=3s       # the coordinators declare a node down after this long not live
coords=http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003
lcores=${LAB_LCORES:-0,1}

# The VMs: namespace dpf-NAME, node, VF index, IPv4, MAC, role.
vms=(vm1 vm2 vm3 web2 web3)
declare -A vm_node=([vm1]=1 [vm2]=2 [vm3]=3 [web2]=2 [web3]=3)
declare -A vm_vf=([vm1]=0 [vm2]=0 [vm3]=0 [web2]=1 [web3]=1)
declare -A vm_ip=([vm1]=10.100.1.1 [vm2]=10.100.2.1 [vm3]=10.100.3.1 [web2]=10.100.2.2 [web3]=10.100.3.2)
declare -A vm_mac=([vm1]=02:00:00:01:00:01 [vm2]=02:00:00:02:00:01 [vm3]=02:00:00:03:00:01
	[web2]=02:00:00:02:00:02 [web3]=02:00:00:03:00:02)
nat_vms=(vm1 vm2 vm3)    # members of the NAT gateway (one port block each, chosen by the coordinator)
lb_vms=(web2 web3)       # load-balancer targets, each running an HTTP server that says its name

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'lab.sh: %s\n' "$*" >&2; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ns_exists() { [[ -e /run/netns/$1 ]]; }
ensure_ns() { ns_exists "$1" || ip netns add "$1"; ip -n "$1" link set lo up; }
node_ns() { echo "dpf-node$1"; }
node_ul() { echo "fc00:$1::1"; }
pf_mac() { echo "22:22:22:22:22:0$1"; }
router_mac() { echo "02:00:00:00:02:0$1"; }
node_api() { echo "http://$mgmt_net.$1:$grpc_port"; }
node_name() { echo "node$1"; }          # --fleet-node-name, the node's id in the cluster
coord_gossip() { echo "$mgmt_net.254:$((gossip_port - 1 + $1))"; }
coord_metrics() { echo "127.0.0.1:920$1"; }

bins() {
	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dpfleet/target}
	node_bin=${DPFLEET_NODE_BIN:-$CARGO_TARGET_DIR/release/dpfleet-node}
	ctl_bin=${DPFLEETCTL_BIN:-$(dirname "$node_bin")/dpfleetctl}
	coord_bin=${DPFLEET_COORDINATOR_BIN:-$(dirname "$node_bin")/dpfleet-coordinator}
}

# Builds (release) the node, the CLI and the coordinator, unless DPFLEET_NODE_BIN is set.
build_bins() {
	bins
	if [[ -n ${DPFLEET_NODE_BIN:-} ]]; then
		for b in "$node_bin" "$ctl_bin" "$coord_bin"; do [[ -x $b ]] || die "$b is not executable"; done
		return
	fi
	say "building dpfleet-node, dpfleetctl, dpfleet-coordinator (release; the first build takes a while)"
	(cd "$repo" && cargo build --release -q -p dpfleet-node -p dpfleetctl -p dpfleet-coordinator)
}

# dpfleetctl against node $1's API over the management network (only to look: the
# coordinators provision the nodes).
ctl() { local n=$1; shift; "$ctl_bin" --node "$(node_api "$n")" "$@"; }

# dpfleetctl against the coordinators' cluster API (any member answers; followers
# forward to the leader).
cctl() { "$ctl_bin" --coordinator "$coords" "$@"; }

alive() { # pidfile name-in-cmdline
	local pid
	[[ -f $1 ]] || return 1
	pid=$(<"$1")
	[[ -d /proc/$pid ]] && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

stop_pid() { # pidfile name
	local pid i
	pid=$(alive "$1" "$2") || { rm -f "$1"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
	[[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
	rm -f "$1"
}

ensure_busybox() {
	local b
	for b in busybox curl tcpdump jq; do command -v "$b" >/dev/null || break; done
	command -v "$b" >/dev/null && return
	say "installing busybox, curl, tcpdump, jq"
	apt-get install -y -qq busybox curl tcpdump jq >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq busybox curl tcpdump jq >/dev/null; }
}

# ---------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------

# Bridges TAP $2 in node $1's namespace (kernel-side MAC $6) to interface $4 in
# namespace $3, MAC $5.
ensure_wire() {
	local ns tap=$2 peer_ns=$3 peer_if=$4 peer_mac=$5 tap_mac=$6 br=br-$2 veth
	ns=$(node_ns "$1")
	veth=n-${peer_if}-${peer_ns#dpf-}
	veth=${veth:0:15}
	ip -n "$ns" link show "$br" >/dev/null 2>&1 || ip -n "$ns" link add "$br" type bridge
	in_ns "$ns" sysctl -qw "net.ipv6.conf.$br.disable_ipv6=1"
	if ! ip -n "$peer_ns" link show "$peer_if" >/dev/null 2>&1; then
		ip -n "$ns" link del "$veth" 2>/dev/null || true
		ip -n "$ns" link add "$veth" type veth peer name "$peer_if" netns "$peer_ns"
	fi
	ip -n "$peer_ns" link set "$peer_if" address "$peer_mac"
	# The TAP's kernel side starts with the DPDK port's own MAC; as a bridge port, the
	# bridge would take frames to that MAC as its own instead of passing them to the node.
	ip -n "$ns" link set "$tap" address "$tap_mac"
	for dev in "$tap" "$veth"; do
		in_ns "$ns" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1"
		ip -n "$ns" addr flush dev "$dev"
		ip -n "$ns" link set "$dev" master "$br" up
	done
	ip -n "$ns" link set "$br" up
	ip -n "$peer_ns" link set "$peer_if" up
}

# The management network: bridge dpf-mgmt in the root namespace (10.254.0.254) and a
# veth into each node namespace (mgmt0, 10.254.0.N). Coordinators and dpfleetctl reach
# each node's API (gRPC, [::]:1337 in its namespace) and metrics (:9100) there, and
# nodes and coordinators gossip over it (UDP; coordinators on 10.254.0.254:7946-7948).
ensure_mgmt() {
	local n ns
	ip link show "$mgmt_br" >/dev/null 2>&1 || ip link add "$mgmt_br" type bridge
	ip addr replace "$mgmt_net.254/24" dev "$mgmt_br"
	ip link set "$mgmt_br" up
	for n in "${nodes[@]}"; do
		ns=$(node_ns "$n")
		if ! ip -n "$ns" link show mgmt0 >/dev/null 2>&1; then
			ip link del "dpf-m-node$n" 2>/dev/null || true
			ip link add "dpf-m-node$n" type veth peer name mgmt0 netns "$ns"
		fi
		ip link set "dpf-m-node$n" master "$mgmt_br" up
		ip -n "$ns" addr replace "$mgmt_net.$n/24" dev mgmt0
		ip -n "$ns" link set mgmt0 up
	done
}

# The router joins the nodes' underlays (link ulN to node N, underlay fc00:N::/64) and
# plays "the internet" gateway (inet0 to dpf-inet). The kernel may have neither ip6
# tunnels nor SRv6 lightweight tunnels, so the IPv4-in-IPv6 tunnel ends are a small
# user-space helper (tunrouter.py) with TUN devices, and the kernel keeps the routing:
# traffic to the public IPs is routed into tunN (spread over the nodes by a multipath
# route) and leaves encapsulated towards node N's underlay address; traffic the nodes
# encapsulate towards $router_sid is decapsulated into tdec and routed to dpf-inet.
# dpservice-style nodes answer no ND on their PF, so each node's /64 goes via its
# underlay address fc00:N::1 with a static neighbour entry.
ensure_router() {
	local n i dev
	ensure_ns "$router_ns"
	ensure_ns "$inet_ns"
	if ! ip -n "$router_ns" link show inet0 >/dev/null 2>&1; then
		ip -n "$router_ns" link add inet0 type veth peer name eth0 netns "$inet_ns"
	fi
	ip -n "$router_ns" addr replace "$inet_gw/24" dev inet0
	ip -n "$router_ns" link set inet0 up
	ip -n "$inet_ns" addr replace "$inet_ip/24" dev eth0
	ip -n "$inet_ns" link set eth0 up
	ip -n "$inet_ns" route replace 203.0.113.0/24 via "$inet_gw"
	# No reverse-path filter: decapsulated packets enter on tdec from the public IPs,
	# which are routed out of the tun devices.
	in_ns "$router_ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
		net.ipv4.fib_multipath_hash_policy=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
	ip -n "$router_ns" addr replace "$router_ul/128" dev lo
	ip -n "$router_ns" addr replace "$router_sid/128" dev lo
	if ! alive "$run/tunrouter.pid" tunrouter.py >/dev/null; then
		ip netns exec "$router_ns" setsid python3 "$here/tunrouter.py" --src "$router_ul" \
			--nodes "$(IFS=,; echo "${nodes[*]}")" --map "$run/tunmap" </dev/null >"$run/tunrouter.log" 2>&1 &
		echo $! >"$run/tunrouter.pid"
	fi
	for dev in "${nodes[@]/#/tun}" tdec; do
		for i in $(seq 1 50); do ip -n "$router_ns" link show "$dev" >/dev/null 2>&1 && break; sleep 0.1; done
		ip -n "$router_ns" link set "$dev" up || die "the router's tunnel helper did not start (see $run/tunrouter.log)"
		in_ns "$router_ns" sysctl -qw "net.ipv4.conf.$dev.rp_filter=0"
	done
}

# The router's links to the nodes (once the wires exist).
router_links() {
	local n
	for n in "${nodes[@]}"; do
		ip -n "$router_ns" -6 neigh replace "$(node_ul "$n")" lladdr "$(pf_mac "$n")" dev "ul$n" nud permanent
		ip -n "$router_ns" -6 route replace "fc00:$n::/64" via "$(node_ul "$n")" dev "ul$n" onlink
	done
}

# Public IP $1 is spread over the nodes: one next hop per node (tunN), each
# encapsulating to the underlay address $2, $3, $4 (node 1, 2, 3; written to the
# tunnel helper's map). The router hashes the 5-tuple (fib_multipath_hash_policy=1), so
# one flow always enters the same node.
spread_route() {
	local ip=$1 n hops=(); shift
	# The helper reads the map again when it changes: replace it once, whole.
	grep -vF " $ip " "$run/tunmap" 2>/dev/null >"$run/tunmap.new" || true
	for n in "${nodes[@]}"; do
		echo "$n $ip ${!n}" >>"$run/tunmap.new"
		hops+=(nexthop dev "tun$n")
	done
	mv "$run/tunmap.new" "$run/tunmap"
	ip -n "$router_ns" route replace "$ip/32" "${hops[@]}"
	# Table 10N sends $ip to node N only: the demo pins single flows to a node with it.
	for n in "${nodes[@]}"; do
		ip -n "$router_ns" route replace "$ip/32" dev "tun$n" table "10$n"
	done
}

start_node() {
	local n=$1 ns pid args i rc free size
	ns=$(node_ns "$n")
	if pid=$(alive "$run/node$n.pid" dpfleet-node); then
		echo "dpf-node$n: dpfleet-node already running (pid $pid)"; return
	fi
	# Distinct file prefixes keep the three DPDK processes apart; --huge-unlink leaves no
	# hugepage files behind. Each node takes about 40 MB of hugepages (16383 mbufs);
	# without 3 x 64 MB free the nodes run on ordinary memory.
	args=(-l "$lcores" --huge-unlink --file-prefix="$ns" --no-pci)
	free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
	size=$(awk '/Hugepagesize/ {print $2}' /proc/meminfo)
	((free * size >= 64 * 1024 * (${#nodes[@]} - n + 1))) || args=(-l "$lcores" --file-prefix="$ns" --no-pci --no-huge -m 512)
	args+=(--vdev="net_tap0,iface=dtap0,mac=$(pf_mac "$n")"
		--vdev="net_tap1,iface=dtapvf_0,mac=66:66:66:66:0$n:00"
		--vdev="net_tap2,iface=dtapvf_1,mac=66:66:66:66:0$n:01"
		-- --pf0=dtap0 --vf-pattern=dtapvf_ --nic-type=tap --ipv6="$(node_ul "$n")" --enable-ipv6-overlay
		--dhcp-mtu=1450 --dhcp-dns=8.8.4.4 --dhcp-dns=8.8.8.8 --dhcpv6-dns=2001:4860:4860::6464
		--grpc-port="$grpc_port" --metrics-port="$metrics_port" --lb-selection=maglev
		--flow-capacity=65536 --no-stats --no-offload
		# Fleet gossip: the node publishes its underlay, API endpoint, VF devices and
		# applied generation; the coordinators register it and their reconciler drives it.
		--fleet-node-name="$(node_name "$n")" --gossip-listen="$mgmt_net.$n:$gossip_port"
		--gossip-seed="$(coord_gossip 1),$(coord_gossip 2),$(coord_gossip 3)"
		--api-advertise="$mgmt_net.$n:$grpc_port")
	echo "dpf-node$n: starting dpfleet-node (log $run/node$n.log)"
	echo "$node_bin ${args[*]}" >"$run/node$n.cmdline"
	ip netns exec "$ns" setsid "$node_bin" "${args[@]}" </dev/null >"$run/node$n.log" 2>&1 &
	pid=$!
	echo "$pid" >"$run/node$n.pid"
	for i in $(seq 1 150); do
		[[ -d /proc/$pid ]] || { tail -30 "$run/node$n.log" >&2; die "dpfleet-node $n exited during start"; }
		# dpfleetctl exits 1 when it cannot reach the node, 2 when the node answers with an
		# error (before Initialize every call is refused: the API is up; the coordinator's
		# reconciler initializes it).
		rc=0
		ctl "$n" --timeout 1s node check-init >/dev/null 2>&1 || rc=$?
		if ip -n "$ns" link show dtapvf_1 >/dev/null 2>&1 && ((rc != 1)); then
			return
		fi
		sleep 0.2
	done
	tail -30 "$run/node$n.log" >&2
	die "dpfleet-node $n did not come up within 30 s"
}

# The coordinators: three Raft members on loopback (Raft and the cluster API on
# 127.0.0.1:700C, data in $state/cC), gossiping on the management bridge
# ($mgmt_net.254:7946-7948, each seeded with the other two; the nodes seed with all
# three), metrics on 127.0.0.1:920C. The leader registers the nodes it sees in gossip,
# declares them down after $node_down_after not live, and reconciles them.
start_coordinators() {
	local c p pid peers seeds args i
	for c in 1 2 3; do
		if pid=$(alive "$run/coord$c.pid" dpfleet-coordinator); then
			echo "coordinator $c already running (pid $pid)"; continue
		fi
		mkdir -p "$state/c$c"
		peers=$(for p in 1 2 3; do ((p == c)) || printf '%s=127.0.0.1:700%s,' "$p" "$p"; done)
		seeds=$(for p in 1 2 3; do ((p == c)) || printf '%s,' "$(coord_gossip "$p")"; done)
		args=(--id "$c" --listen "127.0.0.1:700$c" --data-dir "$state/c$c" --peers "${peers%,}"
			--gossip-listen "$(coord_gossip "$c")" --gossip-seeds "${seeds%,}"
			--node-down-after "$node_down_after" --metrics-listen "$(coord_metrics "$c")")
		((c == 1)) && args+=(--init)
		echo "coordinator $c: starting on 127.0.0.1:700$c, gossip $(coord_gossip "$c"), metrics http://$(coord_metrics "$c")/metrics (log $run/coord$c.log)"
		echo "$coord_bin ${args[*]}" >"$run/coord$c.cmdline"
		setsid "$coord_bin" "${args[@]}" </dev/null >"$run/coord$c.log" 2>&1 &
		echo $! >"$run/coord$c.pid"
	done
	for i in $(seq 1 100); do
		cctl --timeout 1s -o json cluster status 2>/dev/null | jq -e '.leader_id != null' >/dev/null && return
		sleep 0.2
	done
	tail -20 "$run"/coord*.log >&2
	die "the coordinators elected no leader within 20 s"
}

# Waits until the cluster lists every node as active (registered from gossip, driven
# to the generation it joined at), then prints the list.
wait_nodes_active() {
	local i want=${#nodes[@]}
	for i in $(seq 1 300); do
		(($(cctl -o json cluster node list 2>/dev/null | jq '[.[] | select(.state == "active")] | length' 2>/dev/null || echo 0) == want)) && break
		((i == 300)) && { cctl cluster node list >&2 || true; die "not all $want nodes became active within 60 s"; }
		sleep 0.2
	done
	cctl cluster node list | sed 's/^/  /'
}

start_servers() {
	local vm pid
	# dpf-inet: an HTTP server whose CGI tells the client the address and port it sees.
	mkdir -p "$run/www/inet/cgi-bin"
	cat >"$run/www/inet/cgi-bin/who" <<-'EOF'
	#!/bin/sh
	a=${REMOTE_ADDR#\[}; a=${a%\]}; a=${a#::ffff:}
	printf 'Content-Type: text/plain\r\n\r\ninternet: you came from %s:%s\n' "$a" "$REMOTE_PORT"
	EOF
	chmod +x "$run/www/inet/cgi-bin/who"
	if ! alive "$run/httpd-inet.pid" httpd >/dev/null; then
		ip netns exec "$inet_ns" setsid busybox httpd -f -p 80 -h "$run/www/inet" </dev/null >/dev/null 2>&1 &
		echo $! >"$run/httpd-inet.pid"
	fi
	# The load-balancer targets own the VIP (on lo, as a cloud image would configure it)
	# and answer with their name.
	for vm in "${lb_vms[@]}"; do
		ip -n "dpf-$vm" addr replace "$vip/32" dev lo
		mkdir -p "$run/www/$vm"
		echo "$vm" >"$run/www/$vm/index.html"
		if ! alive "$run/httpd-$vm.pid" httpd >/dev/null; then
			ip netns exec "dpf-$vm" setsid busybox httpd -f -p 80 -h "$run/www/$vm" </dev/null >/dev/null 2>&1 &
			echo $! >"$run/httpd-$vm.pid"
		fi
	done
}

lease() { # vm
	in_ns "dpf-$1" busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -O staticroutes -O mtu \
		-s "$here/udhcpc.script" >"$run/$1.dhcp.log" 2>&1 || {
		cat "$run/$1.dhcp.log" >&2; die "no DHCP lease in dpf-$1"; }
	printf '  dpf-%-5s %s\n' "$1" "$(ip -n "dpf-$1" -4 -br addr show dev eth0)"
}

# ---------------------------------------------------------------------------------------
# Provisioning: through the coordinators' cluster API only. The leader's reconciler makes
# the node API calls on every node (interfaces at the coordinator's underlay addresses,
# NATs and the neighbour NATs of the other nodes' blocks, the load balancer on every node
# with the coordinator's Maglev table, the load-balancer prefixes of the targets, the
# routes to the VMs on other nodes) and records the generation each node has applied.
# ---------------------------------------------------------------------------------------

declare -A nat_ul lb_ul nat_min nat_max

# A cluster write with a fixed request id: run again (a second `up`), the coordinator
# answers as the first time and changes nothing. $1 = request id, then the command.
cwrite() {
	local id=$1; shift
	printf '  $ dpfleetctl cluster %s\n' "${*:2}"
	cctl "$@" --request-id "lab-$id" | sed 's/^/    /'
}

# Waits until every node reports (in gossip) the state's generation as applied: the
# reconciler has made every call; then prints the node list.
wait_converged() {
	local i gen
	for i in $(seq 1 300); do
		gen=$(cctl -o json cluster status 2>/dev/null | jq -r .generation) || gen=
		[[ -n $gen ]] && cctl -o json cluster node list 2>/dev/null |
			jq -e --argjson g "$gen" 'length > 0 and all(.[]; .applied_generation == $g)' >/dev/null && break
		((i == 300)) && { cctl cluster node list >&2 || true; die "the nodes did not reach generation $gen within 60 s (see $run/coord*.log)"; }
		sleep 0.2
	done
	echo "  every node has applied generation $gen:"
	cctl cluster node list | sed 's/^/    /'
}

provision() {
	local n vm dev leader follower order json
	# One write through a follower: it forwards the call to the leader.
	leader=$(cctl -o json cluster status | jq -r .leader_id)
	for follower in 1 2 3; do ((follower == leader)) || break; done
	order=http://127.0.0.1:700$follower$(for c in 1 2 3; do ((c == follower)) || printf ',http://127.0.0.1:700%s' "$c"; done)
	echo "  (the VNI through coordinator $follower, a follower: it forwards to the leader, coordinator $leader)"
	printf '  $ dpfleetctl --coordinator %s cluster vni create %s\n' "$order" "$vni"
	"$ctl_bin" --coordinator "$order" cluster vni create "$vni" --request-id "lab-vni-$vni" | sed 's/^/    /'
	# Interfaces on chosen nodes, on the VF the lab wires to the VM (net_tap1 = dtapvf_0,
	# net_tap2 = dtapvf_1), as the node publishes its devices in gossip.
	json=$(cctl -o json cluster node list)
	for vm in "${vms[@]}"; do
		n=${vm_node[$vm]}
		dev=net_tap$((${vm_vf[$vm]} + 1))
		jq -e --arg n "$(node_name "$n")" --arg d "$dev" '.[] | select(.id == $n) | .devices | index($d)' <<<"$json" >/dev/null ||
			die "$(node_name "$n") does not publish device $dev: $(jq -c --arg n "$(node_name "$n")" '.[] | select(.id == $n) | .devices' <<<"$json")"
		cwrite "iface-$vm" cluster iface create --id "$vm" --vni "$vni" --on-node "$(node_name "$n")" --device "$dev" --ipv4 "${vm_ip[$vm]}"
	done
	# The default route: to the router's tunnel endpoint.
	cwrite route-default cluster route add --vni "$vni" --prefix 0.0.0.0/0 --next-hop "$router_sid"
	# NAT gateway: the coordinator gives each member a port block; every other node gets
	# a neighbour NAT for it.
	cwrite "nat-$nat_gw" cluster nat create --id "$nat_gw" --vni "$vni" --ips "$nat_ip" \
		--min-port "$nat_pool_min" --max-port "$nat_pool_max" --block-size "$nat_block"
	for vm in "${nat_vms[@]}"; do
		cwrite "nat-attach-$vm" cluster nat attach --gateway "$nat_gw" --iface "$vm"
	done
	# Load balancer: on every node (each with its own entry underlay), targets web2 and
	# web3 (each gets the VIP as a load-balancer prefix); one Maglev table for all.
	cwrite "lb-$lb_id" cluster lb create --id "$lb_id" --vni "$vni" --ip "$vip" --ports tcp/80
	for vm in "${lb_vms[@]}"; do
		cwrite "lb-$lb_id-$vm" cluster lb add-target --lb "$lb_id" --iface "$vm"
	done
	say "waiting for the reconciler to apply the state on every node"
	wait_converged
	echo "  interfaces:"
	cctl cluster iface list | sed 's/^/    /'
	echo "  NAT gateway and load balancer:"
	cctl cluster nat get "$nat_gw" | sed 's/^/    /'
	cctl cluster lb get "$lb_id" | sed 's/^/    /'
	# The router's half: the public IPs spread over the nodes, to the underlay addresses
	# the coordinator chose (each node's NAT of the gateway's member there; each node's
	# load-balancer entry point).
	json=$(cctl -o json cluster nat get "$nat_gw")
	for vm in "${nat_vms[@]}"; do
		n=${vm_node[$vm]}
		nat_ul[$n]=$(jq -r --arg i "$vm" '.allocations[] | select(.interface_id == $i) | .underlay' <<<"$json")
		nat_min[$n]=$(jq -r --arg i "$vm" '.allocations[] | select(.interface_id == $i) | .port_min' <<<"$json")
		nat_max[$n]=$(jq -r --arg i "$vm" '.allocations[] | select(.interface_id == $i) | .port_max' <<<"$json")
	done
	json=$(cctl -o json cluster lb get "$lb_id")
	for n in "${nodes[@]}"; do
		lb_ul[$n]=$(jq -r --arg n "$(node_name "$n")" '.node_underlays[] | select(.node == $n) | .underlay' <<<"$json")
	done
	for n in "${nodes[@]}"; do
		[[ ${nat_ul[$n]:-} =~ : && ${lb_ul[$n]:-} =~ : ]] || die "no NAT or LB underlay for node $n in the cluster API's answers"
	done
	spread_route "$nat_ip" "${nat_ul[1]}" "${nat_ul[2]}" "${nat_ul[3]}"
	spread_route "$vip" "${lb_ul[1]}" "${lb_ul[2]}" "${lb_ul[3]}"
	echo "  router: $nat_ip and $vip spread over the nodes' underlay addresses:"
	ip -n "$router_ns" route show "$nat_ip" | sed 's/^/    /'
	ip -n "$router_ns" route show "$vip" | sed 's/^/    /'
	# A node sends underlay traffic to the router MAC it learns from tunnel traffic
	# reaching it (dpservice reads it from the kernel's neighbour table), broadcast until
	# then, and the router forwards no broadcast frames. So the tunnel helper greets
	# every underlay address in its map with one tunnelled echo request when the map
	# changes; wait until it has.
	local i
	for i in $(seq 1 50); do
		[[ -s $run/tunmap.greeted && $run/tunmap.greeted -nt $run/tunmap ]] && break
		sleep 0.1
	done
}

# The node owning NAT port $1 (by the blocks the coordinator gave).
port_owner() {
	local n
	for n in "${nodes[@]}"; do
		(($1 >= ${nat_min[$n]} && $1 < ${nat_max[$n]})) && { echo "node$n"; return; }
	done
	echo "no node"
}

# ---------------------------------------------------------------------------------------
# Traffic
# ---------------------------------------------------------------------------------------

# Captures, on the router, what each node sends to another node (outer source
# fc00:K::1, destination in fc00:M::/64): that is relayed traffic, by neighbour NAT or to
# a remote LB target.
capture_start() {
	local n
	for n in "${nodes[@]}"; do
		rm -f "$run/ul$n.pcap"
		ip netns exec "$router_ns" setsid tcpdump -i "ul$n" -Q in --immediate-mode -U -n -s 200 -w "$run/ul$n.pcap" \
			"ip6 src host $(node_ul "$n") and not dst host $router_sid" </dev/null >/dev/null 2>&1 &
		echo $! >"$run/tcpdump-ul$n.pid"
	done
	sleep 1
}
capture_stop() {
	local n
	sleep 0.5
	for n in "${nodes[@]}"; do stop_pid "$run/tcpdump-ul$n.pid" tcpdump; done
}
# Prints the relayed packets node $1 sent to node $2 whose inner destination is $3.
relayed() {
	tcpdump -r "$run/ul$1.pcap" -n "ip6 dst net fc00:$2::/64" 2>/dev/null | grep -F " > $3." || true
}

# GET http://$2/ from the client in dpf-inet, from source port $1; prints the body. The
# client resets the connection at the end (SO_LINGER 0), so that neither side keeps
# the 4-tuple in TIME_WAIT and the same flow can be opened again at once.
get_from_port() {
	in_ns "$inet_ns" /usr/bin/python3 - "$1" "$2" <<-'EOF'
	import socket, struct, sys
	s = socket.socket()
	s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
	s.settimeout(5)
	s.bind(("0.0.0.0", int(sys.argv[1])))
	s.connect((sys.argv[2], 80))
	s.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
	data = b""
	while chunk := s.recv(4096):
	    data += chunk
	s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
	s.close()
	print(data.split(b"\r\n\r\n", 1)[-1].decode().strip())
	EOF
}

demo() {
	local vm n m i out total port owner entry
	say "ping vm1 (node1) -> vm2 (node2): across the underlay, through the router"
	in_ns dpf-vm1 busybox ping -c 2 -W 2 "${vm_ip[vm2]}" | tail -2

	say "NAT: 5 connections from each of vm1, vm2, vm3 to http://$inet_ip (replies spread over the 3 nodes)"
	capture_start
	for vm in "${nat_vms[@]}"; do
		for i in 1 2 3 4 5; do
			out=$(in_ns "dpf-$vm" curl -s -m 5 "http://$inet_ip/cgi-bin/who") || die "$vm: NAT connection $i failed"
			port=${out##*:}
			printf '  %s (node%s): %s  (port block of %s)\n' "$vm" "${vm_node[$vm]}" "$out" "$(port_owner "$port")"
		done
	done
	capture_stop
	echo "  replies relayed by neighbour NAT (captured on the router), entry node -> owner node:"
	total=0
	for n in "${nodes[@]}"; do
		for m in "${nodes[@]}"; do
			((m == n)) && continue
			i=$(relayed "$n" "$m" "$nat_ip" | wc -l)
			total=$((total + i))
			printf '    node%s -> node%s: %2s connections (%s packets)\n' "$n" "$m" \
				"$(relayed "$n" "$m" "$nat_ip" | grep -c 'Flags \[S\.\]' || true)" "$i"
		done
	done
	((total > 0)) || die "no reply entered a non-owner node; the multipath route did not spread them"

	say "NAT, pinned: replies for node1's block (${nat_min[1]}-$((nat_max[1] - 1))) forced into node2, which relays them"
	ip -n "$router_ns" rule add iif inet0 ipproto tcp dport "${nat_min[1]}-$((nat_max[1] - 1))" lookup 102 pref 100
	capture_start
	out=$(in_ns dpf-vm1 curl -s -m 5 "http://$inet_ip/cgi-bin/who") || out="FAILED"
	capture_stop
	ip -n "$router_ns" rule del pref 100
	echo "  vm1: $out"
	relayed 2 1 "$nat_ip" | head -3 | sed 's/^/    node2 relayed: /'
	[[ $out != FAILED ]] || die "vm1's connection with replies through node2 failed"

	say "LB: 12 connections from dpf-inet to http://$vip (entering the nodes the router picks)"
	capture_start
	declare -A hits=()
	for i in $(seq 1 12); do
		out=$(in_ns "$inet_ns" curl -s -m 5 "http://$vip/") || die "LB connection $i failed"
		hits[$out]=$((${hits[$out]:-0} + 1))
	done
	capture_stop
	for out in "${!hits[@]}"; do echo "  answered by $out: ${hits[$out]}"; done
	for n in "${nodes[@]}"; do
		for m in "${nodes[@]}"; do
			((m == n)) && continue
			i=$(relayed "$n" "$m" "$vip" | grep -c 'Flags \[S\]' || true)
			((i == 0)) || printf '    node%s relayed %s new connections to a target on node%s\n' "$n" "$i" "$m"
		done
	done

	say "LB: one flow (client port 40001, then 40002) pinned through each node in turn"
	for port in 40001 40002; do
		for n in "${nodes[@]}"; do
			ip -n "$router_ns" rule add iif inet0 ipproto tcp sport "$port" lookup "10$n" pref 101
			out=$(get_from_port "$port" "$vip" 2>/dev/null) || out="FAILED"
			ip -n "$router_ns" rule del pref 101
			printf '  %s:%s via node%s -> %s\n' "$inet_ip" "$port" "$n" "$out"
			[[ $n == 1 ]] && entry=$out
			[[ $out == "$entry" ]] || die "flow from port $port landed on $out via node$n, on $entry via node1"
		done
	done
}

# ---------------------------------------------------------------------------------------

cmd_up() {
	((EUID == 0)) || die "needs root (namespaces, TAP devices)"
	local t0=$SECONDS n vm
	mkdir -p "$run" "$state"
	bash "$repo/scripts/setup.sh"
	build_bins
	ensure_busybox
	t0=$SECONDS

	say "namespaces, management network, router"
	for n in "${nodes[@]}"; do ensure_ns "$(node_ns "$n")"; done
	for vm in "${vms[@]}"; do ensure_ns "dpf-$vm"; done
	ensure_mgmt
	ensure_router

	say "coordinators (Raft, cluster API, gossip, reconciler)"
	start_coordinators
	say "nodes (gossiping with the coordinators)"
	for n in "${nodes[@]}"; do start_node "$n"; done

	say "wiring TAPs to the router and the VMs"
	for n in "${nodes[@]}"; do
		ensure_wire "$n" dtap0 "$router_ns" "ul$n" "$(router_mac "$n")" "02:fe:00:00:0$n:00"
	done
	for vm in "${vms[@]}"; do
		ensure_wire "${vm_node[$vm]}" "dtapvf_${vm_vf[$vm]}" "dpf-$vm" eth0 "${vm_mac[$vm]}" \
			"02:fe:00:00:0${vm_node[$vm]}:1${vm_vf[$vm]}"
	done
	router_links

	say "waiting for the coordinators to register the nodes from gossip (dpfleetctl cluster node list)"
	wait_nodes_active

	say "provisioning through the cluster API (dpfleetctl --coordinator $coords cluster ...)"
	provision

	say "DHCP in the VMs; HTTP servers"
	for vm in "${vms[@]}"; do lease "$vm"; done
	start_servers

	demo

	printf '\nThe lab is up (%s s after the build). Look around: %s status\n' "$((SECONDS - t0))" "$0"
	how_to
}

how_to() {
	cat <<-EOF
	  The cluster (any coordinator answers, followers forward to the leader):
	    export DPFLEET_COORDINATOR=$coords
	    $ctl_bin cluster status
	    $ctl_bin cluster node list          # state, joined and applied generation
	    $ctl_bin cluster iface list
	    $ctl_bin cluster nat get $nat_gw
	    $ctl_bin cluster lb get $lb_id
	    curl -s http://$(coord_metrics 1)/metrics | grep -E '^dpfleet_coordinator_'    # also $(coord_metrics 2), $(coord_metrics 3)
	  A node going down and coming back:
	    kill \$(cat $run/node2.pid)        # node2 stops gossiping
	    $ctl_bin cluster node list          # node2 down after ~$node_down_after + ~1.5 s detection
	    $ctl_bin --node $(node_api 1) node neighnat list --ip $nat_ip   # node2's block gone (node3 too)
	    $0 up                               # restarts node2: it rejoins, the reconciler repairs it
	  The nodes' API and metrics (to look; the coordinators provision them):
	    $ctl_bin --node $(node_api 2) node iface list
	    $ctl_bin --node $(node_api 2) node nat list-local --ip $nat_ip
	    $ctl_bin --node $(node_api 3) node neighnat list --ip $nat_ip
	    $ctl_bin --node $(node_api 1) node lbtarget list --lb $lb_id
	    curl -s http://$mgmt_net.1:$metrics_port/metrics | grep -E '^dpfleet_(applied_generation|port_(rx|tx)_packets_total|dropped_packets_total)' | grep -v ' 0\$'
	  Traffic:
	    ip netns exec dpf-vm1 curl -s http://$inet_ip/cgi-bin/who     # out through the NAT gateway
	    ip netns exec $inet_ns curl -s http://$vip/                   # in through the load balancer
	    ip netns exec $router_ns ip route show $nat_ip              # the spread over the nodes
	    ip netns exec $router_ns tcpdump -ni ul2 ip6                  # node2's underlay link
	  Logs: $run/node{1,2,3}.log, $run/coord{1,2,3}.log
	  Tear down: $0 down
	EOF
}

cmd_status() {
	local n c pid vm ns
	bins
	for c in 1 2 3; do
		if pid=$(alive "$run/coord$c.pid" dpfleet-coordinator); then
			echo "coordinator $c: running, pid $pid, 127.0.0.1:700$c, gossip $(coord_gossip "$c"), metrics http://$(coord_metrics "$c")/metrics, data $state/c$c, log $run/coord$c.log"
		else
			echo "coordinator $c: not running"
		fi
	done
	for n in "${nodes[@]}"; do
		if pid=$(alive "$run/node$n.pid" dpfleet-node); then
			echo "node$n: running in dpf-node$n, pid $pid, API $(node_api "$n"), metrics http://$mgmt_net.$n:$metrics_port/metrics, log $run/node$n.log"
		else
			echo "node$n: not running"
		fi
	done
	echo "VM leases:"
	for vm in "${vms[@]}"; do
		if ns_exists "dpf-$vm"; then
			printf '  dpf-%-5s node%s %s\n' "$vm" "${vm_node[$vm]}" "$(ip -n "dpf-$vm" -4 -br addr show dev eth0 2>/dev/null || echo '(no eth0)')"
		else
			printf '  dpf-%-5s absent\n' "$vm"
		fi
	done
	for ns in "$router_ns" "$inet_ns"; do
		if ns_exists "$ns"; then
			echo "namespace $ns:"; { ip -n "$ns" -br addr | grep -v "^lo " || true; } | sed 's/^/  /'
		else
			echo "namespace $ns: absent"
		fi
	done
	if alive "$run/coord1.pid" dpfleet-coordinator >/dev/null || alive "$run/coord2.pid" dpfleet-coordinator >/dev/null; then
		echo "cluster status:"; cctl cluster status 2>&1 | sed 's/^/  /' || true
		echo "cluster nodes:"; cctl cluster node list 2>&1 | sed 's/^/  /' || true
		echo "cluster NAT gateway $nat_gw:"; cctl cluster nat get "$nat_gw" 2>&1 | sed 's/^/  /' || true
	fi
	for n in "${nodes[@]}"; do
		alive "$run/node$n.pid" dpfleet-node >/dev/null || continue
		echo "node$n interfaces:"; ctl "$n" node iface list 2>&1 | sed 's/^/  /' || true
		echo "node$n neighbour NATs:"; ctl "$n" node neighnat list --ip "$nat_ip" 2>&1 | sed 's/^/  /' || true
	done
	if ns_exists "$router_ns"; then
		echo "router: $nat_ip and $vip spread over the nodes:"
		ip -n "$router_ns" route show "$nat_ip" 2>&1 | sed 's/^/  /'
		ip -n "$router_ns" route show "$vip" 2>&1 | sed 's/^/  /'
		echo "Look around:"
		how_to
	fi
}

cmd_down() {
	((EUID == 0)) || die "needs root"
	local n c f vm ns
	bins
	for f in "$run"/httpd-*.pid "$run"/tcpdump-*.pid; do
		[[ -e $f ]] && stop_pid "$f" "$(basename "$f" | cut -d- -f1)"
	done
	for n in "${nodes[@]}"; do
		alive "$run/node$n.pid" dpfleet-node >/dev/null && say "stopping dpfleet-node $n"
		stop_pid "$run/node$n.pid" dpfleet-node
	done
	for c in 1 2 3; do
		alive "$run/coord$c.pid" dpfleet-coordinator >/dev/null && say "stopping coordinator $c"
		stop_pid "$run/coord$c.pid" dpfleet-coordinator
	done
	for ns in "${vms[@]/#/dpf-}" "$inet_ns" "$router_ns" dpf-node1 dpf-node2 dpf-node3; do
		if ns_exists "$ns"; then
			say "deleting namespace $ns"
			ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
			ip netns del "$ns"
		fi
	done
	for n in "${nodes[@]}"; do
		ip link del "dpf-m-node$n" 2>/dev/null || true
		rm -rf "/var/run/dpdk/dpf-node$n"
		rm -f /dev/hugepages/dpf-node"$n"map_* 2>/dev/null || true
	done
	if ip link show "$mgmt_br" >/dev/null 2>&1; then say "deleting bridge $mgmt_br"; ip link del "$mgmt_br"; fi
	rm -rf "$run" "$state"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) sed -n '2,7p' "$0"; exit 2 ;;
esac
