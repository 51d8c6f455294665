#!/usr/bin/env bash
# Installs what dpfleet needs to build, test and run on Debian bookworm, idempotently.
# Needs root. Safe to run again: it only installs what is missing.
#
#   - apt: DPDK 22.11 (dpdk, dpdk-dev, libdpdk-dev), clang/libclang (bindgen),
#     protobuf-compiler (tonic codegen), pkg-config, iproute2, busybox (DHCP client in the
#     lab), python3-scapy (frame checks in the lab), libpcap (net_pcap benchmark port)
#   - hugepages: 1024 x 2 MiB reserved and hugetlbfs mounted at /dev/hugepages
#     (the node falls back to --no-huge if this is impossible, e.g. in a container)
set -euo pipefail

((EUID == 0)) || { echo "setup.sh: needs root (apt, hugepages)" >&2; exit 1; }

packages=(dpdk dpdk-dev libdpdk-dev libclang-dev clang pkg-config protobuf-compiler
	iproute2 busybox python3 python3-scapy libpcap-dev procps curl bc tcpdump)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup.sh: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

want=1024
have=$(cat /proc/sys/vm/nr_hugepages)
if ((have < want)); then
	echo "$want" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
fi
mountpoint -q /dev/hugepages 2>/dev/null || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null || true; }
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if ((free == 0)) || ! mountpoint -q /dev/hugepages; then
	echo "setup.sh: no usable hugepages here; dpfleet-node will run with --no-huge (slower)"
fi

command -v cargo >/dev/null || { echo "setup.sh: cargo not found: install Rust (rustup) first" >&2; exit 1; }
