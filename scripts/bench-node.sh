#!/usr/bin/env bash
# Benchmarks the whole dpfleet-node on one worker core without a NIC, as
# ../shared/PLATFORM.md describes: a net_pcap port replays 64-byte frames endlessly
# into the node, which routes them and transmits into net_null ports. In the same run,
# dpdk-testpmd --forward-mode=macswap on the same kind of vdevs gives the I/O ceiling.
#
#   scripts/bench-node.sh [SECONDS] [PATH...]   (default 10 s per measurement; needs root)
#   BENCH_ROUNDS=N scripts/bench-node.sh ...      (testpmd and the node alternately, N
#                                                  times each; medians compared)
#
# Paths: vf-to-vf, vf-to-pf (the node core), and the stateful ones: snat (VF to PF through
# a NAT gateway, 65,536 live flows), fw (VF to VF with --enforce-firewall and an accepting
# ingress rule), lb (tunnelled client traffic from the PF to a load balancer's VIP, placed
# by Maglev on a target interface of this node: decapsulation, the LB zone of conntrack,
# delivery to the VF). Every frame after the first round belongs to an established flow.
# Prints a markdown table for docs/benchmarks.md.
#
# A/B mode: with BENCH_BASE set to another cargo target dir holding a release build of
# dpfleet-node and dpfleetctl (say, of main, built in a git worktree), each path is run
# BENCH_ROUNDS times (default 4) with that build and this one alternately, without
# testpmd, and the medians are compared. On a host whose load moves single runs by
# 10-20 %, this shows changes of a few per cent that single runs cannot.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-10}
shift || true
paths=("$@")
((${#paths[@]})) || paths=(vf-to-vf vf-to-pf snat fw lb)
bash scripts/setup.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dpfleet/target}
cargo build --release -q -p dpfleet-node -p dpfleetctl
node=$CARGO_TARGET_DIR/release/dpfleet-node
ctl=$CARGO_TARGET_DIR/release/dpfleetctl
work=$(mktemp -d -t dpfleet-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
/usr/bin/python3 scripts/bench/mkpcap.py "$work"

huge=(--huge-unlink)
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
((free >= 512)) || huge=(--no-huge -m 1024)

# Port counter of a DPDK port, from the node's metrics.
metric() { # port-name
	curl -s "http://127.0.0.1:$mport/metrics" |
		awk -v n="$1" '$1 ~ /^dpfleet_port_tx_packets_total/ && $1 ~ "name=\""n"\"" {print $2}'
}

ceiling() { # pcap
	local log=$work/testpmd.log
	timeout $((secs + 8)) dpdk-testpmd -l 0,1 --no-pci "${huge[@]}" --file-prefix=dpfleet-bench-tpmd \
		--vdev=net_pcap0,rx_pcap="$1",infinite_rx=1 --vdev=net_null0,no-rx=1 \
		-- --forward-mode=macswap --nb-cores=1 --stats-period=1 --total-num-mbufs=200000 \
		>"$log" 2>&1 || true
	# The null port's Tx-pps samples, skipping the first two (start-up).
	awk '/Tx-pps/ && $2 > 0 {print $2}' "$log" | tail -n +3 | head -n "$((secs - 2))" |
		awk '{s += $1; n++} END {if (n) printf "%.0f\n", s / n; else print 0}'
}

node_rate() { # pcap out-port-name path
	local pcap=$1 out=$2 path=$3 ports=(--pf0=net_null0 --vf-pattern=net_)
	# BENCH_NODE_ARGS: more node options, e.g. "--flow-capacity=65536".
	local extra=(${BENCH_NODE_ARGS:-})
	mport=19100
	[[ $path == fw ]] && extra+=(--enforce-firewall)
	# The LB path's frames arrive on the PF: the pcap port is pf0, the null ports VFs.
	[[ $path == lb ]] && ports=(--pf0=net_pcap0 --vf-pattern=net_null) extra+=(--lb-selection=maglev)
	"$node" -l 0,1 --no-pci "${huge[@]}" --file-prefix=dpfleet-bench-node \
		--vdev=net_pcap0,rx_pcap="$pcap",infinite_rx=1 \
		--vdev=net_null0,no-rx=1 --vdev=net_null1,no-rx=1 \
		-- "${ports[@]}" --nic-type=tap --ipv6=fc00:1::1 --no-stats \
		--grpc-port=19137 --metrics-port=$mport --listen-addr=127.0.0.1 --busy-poll \
		--mbufs=131071 "${extra[@]}" >"$work/node.log" 2>&1 &
	local pid=$!
	local api=http://127.0.0.1:19137
	for _ in $(seq 100); do "$ctl" --node $api node check-init >/dev/null 2>&1 && break
		"$ctl" --node $api node init >/dev/null 2>&1 && break; sleep 0.1; done
	"$ctl" --node $api node init >/dev/null 2>&1 || true
	[[ $path == lb ]] || "$ctl" --node $api node iface create --id vm1 --vni 100 --ipv4 10.100.1.1 --device net_pcap0 >/dev/null
	"$ctl" --node $api node iface create --id vm2 --vni 100 --ipv4 10.100.1.2 --device net_null1 >/dev/null
	"$ctl" --node $api node route create --vni 100 --prefix 10.200.0.0/16 --next-hop fc00:2::1 >/dev/null
	case $path in
	snat)
		"$ctl" --node $api node route create --vni 100 --prefix 0.0.0.0/0 --next-hop fc00::ffff >/dev/null
		"$ctl" --node $api node nat create --iface vm1 --ip 172.21.1.1 --min-port 1024 --max-port 65535 >/dev/null
		;;
	fw)
		"$ctl" --node $api node fw create --iface vm2 --rule-id bench-udp --proto udp >/dev/null
		;;
	lb)
		# The VIP on vm2 (its load-balancer prefix) is the one target; both underlay
		# addresses are chosen here, as the coordinator does, so the pcap can name them.
		"$ctl" --node $api node lb create --id lb1 --vni 100 --ip 172.20.0.1 --ports udp/5000 \
			--underlay fc00:1::8000:0:1 >/dev/null
		"$ctl" --node $api node lbprefix create --iface vm2 --prefix 172.20.0.1/32 \
			--underlay fc00:1::8000:0:2 >/dev/null
		"$ctl" --node $api node lbtarget create --lb lb1 --ip fc00:1::8000:0:2 >/dev/null
		;;
	esac
	sleep 2
	local a b
	a=$(metric "$out"); sleep "$secs"; b=$(metric "$out")
	kill "$pid"; wait "$pid" 2>/dev/null || true
	echo $(((b - a) / secs))
}

pcap_of() { # path: sets pcap and out
	case $1 in
	vf-to-vf | fw) pcap=$work/vf-to-vf.pcap out=net_null1 ;;
	vf-to-pf) pcap=$work/vf-to-pf.pcap out=net_null0 ;;
	snat) pcap=$work/snat.pcap out=net_null0 ;;
	lb) pcap=$work/lb.pcap out=net_null1 ;;
	*) echo "unknown path $1" >&2; exit 2 ;;
	esac
}

if [[ -n ${BENCH_BASE:-} ]]; then
	this_node=$node this_ctl=$ctl
	printf '| path | base median (pps) | this build median (pps) | this / base |\n|---|---|---|---|\n'
	for name in "${paths[@]}"; do
		pcap_of "$name"
		base=() this=()
		for _ in $(seq "${BENCH_ROUNDS:-4}"); do
			node=$BENCH_BASE/release/dpfleet-node ctl=$BENCH_BASE/release/dpfleetctl
			base+=("$(node_rate "$pcap" "$out" "$name")")
			node=$this_node ctl=$this_ctl
			this+=("$(node_rate "$pcap" "$out" "$name")")
		done
		/usr/bin/python3 - "$name" "${base[*]}" "${this[*]}" <<'PY'
import statistics, sys
name, a, b = sys.argv[1], [int(x) for x in sys.argv[2].split()], [int(x) for x in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"| {name} | {ma / 1e6:.2f} M | {mb / 1e6:.2f} M | {mb / ma:.3f} |")
PY
	done
	exit 0
fi

echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //'), hugepages: ${huge[*]}"
# BENCH_ROUNDS > 1: testpmd and the node alternately, that many times each; the medians
# are compared (the host's load moves single runs by 5-10 %, the ceiling's too).
rounds=${BENCH_ROUNDS:-1}
printf '| path | dpfleet-node (pps) | testpmd macswap (pps) | ratio | rounds |\n|---|---|---|---|---|\n'
for name in "${paths[@]}"; do
	pcap_of "$name"
	cs=() ns=()
	for _ in $(seq "$rounds"); do
		cs+=("$(ceiling "$pcap")")
		ns+=("$(node_rate "$pcap" "$out" "$name")")
	done
	/usr/bin/python3 - "$name" "${ns[*]}" "${cs[*]}" <<'PY'
import statistics, sys
name, n, c = sys.argv[1], [int(x) for x in sys.argv[2].split()], [int(x) for x in sys.argv[3].split()]
mn, mc = statistics.median(n), statistics.median(c)
each = " ".join(f"{a / b:.2f}" for a, b in zip(n, c))
print(f"| {name} | {mn / 1e6:.2f} M | {mc / 1e6:.2f} M | {mn / mc:.2f} | {len(n)} ({each}) |")
PY
done
