#!/usr/bin/python3
"""Writes the benchmark's input pcaps: 64-byte frames (60 bytes + FCS on the wire) from
VM1 of the benchmark topology, 1024 UDP flows each.

  vf-to-vf.pcap: VM1 (10.100.1.1) -> VM2 (10.100.1.2), same VNI, same node
  vf-to-pf.pcap: VM1 (10.100.1.1) -> 10.200.x.y, a prefix routed through the underlay
  snat.pcap:     VM1 -> 256 internet addresses x 256 source ports = 65,536 flows through
                 the default route (and VM1's NAT gateway)
  lb.pcap:       the router -> the load balancer's underlay address: IPv4-in-IPv6 from
                 1024 clients (one UDP flow each) to the VIP 172.20.0.1:5000 (96 bytes)
"""
import sys

from scapy.all import Ether, IP, IPv6, UDP, Raw, wrpcap

VM1_MAC = "66:66:66:66:66:00"  # the mac= of the VF port the frames arrive on
GW_MAC = "66:66:66:66:66:00"


def frames(dst_of, count=1024, sport_of=lambda i: 1024 + i):
    out = []
    for i in range(count):
        p = (Ether(src="02:00:00:00:00:01", dst=GW_MAC) /
             IP(src="10.100.1.1", dst=dst_of(i), ttl=64) /
             UDP(sport=sport_of(i), dport=5000))
        pad = 60 - len(p)
        if pad > 0:
            p = p / Raw(b"\x00" * pad)
        out.append(p)
    return out


# The load balancer's underlay address on the benchmark node (fc00:1::1): its /64, flag
# byte 0x80 (chosen with preferred_underlay_route, as the coordinator does).
LB_UNDERLAY = "fc00:1::8000:0:1"


def lb_frames(count=1024):
    out = []
    for i in range(count):
        p = (Ether(src="02:00:00:00:ff:ff", dst=GW_MAC) /
             IPv6(src="fc00::ffff", dst=LB_UNDERLAY, nh=4, hlim=64) /
             IP(src=f"198.51.{i // 256}.{i % 256}", dst="172.20.0.1", ttl=64) /
             UDP(sport=40000, dport=5000) / Raw(b"\x00" * 14))
        out.append(p)
    return out


def main(outdir):
    wrpcap(f"{outdir}/vf-to-vf.pcap", frames(lambda i: "10.100.1.2"))
    wrpcap(f"{outdir}/vf-to-pf.pcap", frames(lambda i: f"10.200.{i // 256}.{i % 256}"))
    wrpcap(f"{outdir}/snat.pcap",
           frames(lambda i: f"45.86.6.{i % 256}", count=65536, sport_of=lambda i: 1024 + i // 256))
    wrpcap(f"{outdir}/lb.pcap", lb_frames())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
