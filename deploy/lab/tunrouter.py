#!/usr/bin/env python3
"""The lab router's tunnel endpoint, in user space.

  tunrouter.py --src UNDERLAY --nodes 1,2,3 --map FILE

Runs in the router namespace of deploy/lab/lab.sh. Kernels without SRv6 lightweight
tunnels or ip6 tunnels (CONFIG_IPV6_SEG6_LWTUNNEL, CONFIG_IPV6_TUNNEL off) cannot
encapsulate IPv4 in IPv6 by route, so this does it, with the kernel still doing all the
routing (multipath hashing, policy rules):

- It creates one TUN device per node, tun1, tun2, ... The kernel routes the public IPs
  into them (a multipath route over all of them spreads flows over the nodes; a route in
  table 10N pins them to node N). An IPv4 packet read from tunN leaves as IPv4-in-IPv6
  from UNDERLAY to node N's underlay address for its destination, as FILE says.
- IPv4-in-IPv6 packets for any of the router's own addresses (what the nodes send to the
  router's tunnel endpoint) arrive on a raw IPv6 socket for next header 4; their inner
  packet is written into the TUN device tdec, and the kernel routes it on.

FILE holds lines "N PUBLIC_IPV4 UNDERLAY_IPV6" and is read again whenever it changes.
After each reading, every underlay address in it is greeted with one tunnelled echo
request (a node learns the router's MAC from tunnel traffic and sends broadcast until
then), and FILE.greeted is written.
"""

import argparse
import fcntl
import ipaddress
import os
import select
import socket
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
IPV6_PKTINFO = 50
# Source of the greeting's inner packet: the router's own address on the internet side,
# so that the node's answer comes back here and ends.
GREETING_SRC = "192.0.2.254"


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def echo_request(src, dst, ident):
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + icmp


def read_map(path, nodes):
    table = {n: {} for n in nodes}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) not in table:
                    continue
                n, ip, ul = int(parts[0]), parts[1], parts[2]
                table[n][socket.inet_aton(ip)] = str(ipaddress.IPv6Address(ul))
    except FileNotFoundError:
        pass
    return table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, help="the router's underlay address")
    ap.add_argument("--nodes", required=True, help="node numbers, comma-separated")
    ap.add_argument("--map", required=True, help="file of 'N PUBLIC_IPV4 UNDERLAY_IPV6' lines")
    args = ap.parse_args()
    nodes = [int(n) for n in args.nodes.split(",")]
    tuns = {open_tun(f"tun{n}"): n for n in nodes}
    dec = open_tun("tdec")
    raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPIP)
    pktinfo = [(socket.IPPROTO_IPV6, IPV6_PKTINFO,
                socket.inet_pton(socket.AF_INET6, args.src) + struct.pack("I", 0))]

    def send(packet, underlay):
        try:
            raw.sendmsg([packet], pktinfo, 0, (underlay, 0))
        except OSError:
            pass  # no route yet, or the node is down: dropped, as a router would

    table, seen = read_map(args.map, nodes), None
    while True:
        try:
            mtime = os.stat(args.map).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime != seen:
            seen = mtime
            table = read_map(args.map, nodes)
            for i, (n, entries) in enumerate(sorted(table.items())):
                for j, (ip, ul) in enumerate(entries.items()):
                    send(echo_request(GREETING_SRC, socket.inet_ntoa(ip), 0x6c00 + 16 * i + j), ul)
            if mtime is not None:
                with open(args.map + ".greeted", "w") as f:
                    f.write(f"{mtime}\n")
        ready, _, _ = select.select([raw, *tuns], [], [], 0.2)
        for fd in ready:
            if fd is raw:
                inner = raw.recv(65535)
                if inner and inner[0] >> 4 == 4:
                    os.write(dec, inner)
                continue
            packet = os.read(fd, 65535)
            if len(packet) < 20 or packet[0] >> 4 != 4:
                continue
            underlay = table[tuns[fd]].get(packet[16:20])
            if underlay:
                send(packet, underlay)


if __name__ == "__main__":
    main()
