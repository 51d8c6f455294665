#!/usr/bin/env python3
"""A tiny client for a dpfleet node's gRPC API (dpdkironcore.v1.DPDKironcore).

Stubs are generated on first use from the repository's proto/dpdk.proto with
grpcio-tools into a cache directory keyed by the proto's hash, so the script always
speaks the API of the checkout it lives in.

    nodeapi.py [--addr HOST:PORT] COMMAND [ARGS]

Commands (errors in replies are printed as "error CODE: MESSAGE", exit status 2):
    wait [SECONDS]                          wait until the API answers
    init                                    Initialize (idempotent)
    version                                 GetVersion
    ensure-interface ID DEVICE VNI IPV4 IPV6
                                            CreateInterface unless ID exists; prints
                                            the underlay address
    get-interface ID | del-interface ID | list-interfaces
    ensure-route VNI PREFIX/LEN NEXTHOP_VNI NEXTHOP_IPV6
                                            CreateRoute unless it exists
    del-route VNI PREFIX/LEN | list-routes VNI
    vni-in-use VNI
"""

import argparse
import hashlib
import ipaddress
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto", "dpdk.proto"))

ALREADY_EXISTS = 202
ROUTE_EXISTS = 301


def load_stubs():
    """Imports dpdk_pb2 and dpdk_pb2_grpc, generating them if needed."""
    try:
        import grpc  # noqa: F401
        from grpc_tools import protoc
    except ImportError:
        sys.exit("nodeapi.py needs grpcio and grpcio-tools: python3 -m pip install grpcio grpcio-tools")
    with open(PROTO, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dpfleet-lab", digest)
    if not os.path.exists(os.path.join(cache, "dpdk_pb2_grpc.py")):
        os.makedirs(cache, exist_ok=True)
        import importlib.resources
        include = str(importlib.resources.files("grpc_tools") / "_proto")
        rc = protoc.main(["protoc", f"-I{os.path.dirname(PROTO)}", f"-I{include}",
                          f"--python_out={cache}", f"--grpc_python_out={cache}", PROTO])
        if rc != 0:
            sys.exit(f"protoc failed on {PROTO}")
    sys.path.insert(0, cache)
    import dpdk_pb2
    import dpdk_pb2_grpc
    return dpdk_pb2, dpdk_pb2_grpc


pb, pbg = load_stubs()
import grpc  # noqa: E402  (after the import check in load_stubs)


class ReplyError(Exception):
    def __init__(self, status):
        super().__init__(f"error {status.code}: {status.message}")
        self.code = status.code


def call(stub, method, request):
    reply = getattr(stub, method)(request, timeout=10)
    if reply.status.code != 0:
        raise ReplyError(reply.status)
    return reply


def ip_msg(text):
    addr = ipaddress.ip_address(text)
    ver = pb.IPV4 if addr.version == 4 else pb.IPV6
    return pb.IpAddress(ipver=ver, address=str(addr).encode())


def prefix_msg(text):
    net = ipaddress.ip_network(text, strict=True)
    return pb.Prefix(ip=ip_msg(str(net.network_address)), length=net.prefixlen)


def text(b):
    return b.decode() if isinstance(b, bytes) else b


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", default="localhost:1337", help="node API address (default localhost:1337)")
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    a = parser.parse_args()
    stub = pbg.DPDKironcoreStub(grpc.insecure_channel(a.addr))
    cmd, args = a.command, a.args

    if cmd == "wait":
        deadline = time.monotonic() + float(args[0] if args else 15)
        while True:
            try:
                stub.CheckInitialized(pb.CheckInitializedRequest(), timeout=1)
                return 0
            except grpc.RpcError as e:
                # ABORTED means "answering, not initialized yet": good enough.
                if e.code() == grpc.StatusCode.ABORTED:
                    return 0
                if time.monotonic() > deadline:
                    sys.exit(f"node API at {a.addr} not answering: {e.code().name}")
                time.sleep(0.2)
    elif cmd == "init":
        print(call(stub, "Initialize", pb.InitializeRequest()).uuid)
    elif cmd == "version":
        r = call(stub, "GetVersion", pb.GetVersionRequest(client_protocol="v1", client_name="nodeapi.py", client_version="0"))
        print(f"protocol {r.service_protocol}, version {r.service_version}")
    elif cmd == "ensure-interface":
        iid, device, vni, ipv4, ipv6 = args
        try:
            r = call(stub, "GetInterface", pb.GetInterfaceRequest(interface_id=iid.encode()))
            print(text(r.interface.underlay_route))
            return 0
        except ReplyError:
            pass
        r = call(stub, "CreateInterface", pb.CreateInterfaceRequest(
            interface_type=pb.VIRTUAL, interface_id=iid.encode(), vni=int(vni), device_name=device,
            ipv4_config=pb.IpConfig(primary_address=ipv4.encode()),
            ipv6_config=pb.IpConfig(primary_address=ipv6.encode())))
        print(text(r.underlay_route))
    elif cmd == "get-interface":
        i = call(stub, "GetInterface", pb.GetInterfaceRequest(interface_id=args[0].encode())).interface
        print(f"{text(i.id)} vni {i.vni} device {i.pci_name} ipv4 {text(i.primary_ipv4)} "
              f"ipv6 {text(i.primary_ipv6)} underlay {text(i.underlay_route)}")
    elif cmd == "del-interface":
        call(stub, "DeleteInterface", pb.DeleteInterfaceRequest(interface_id=args[0].encode()))
    elif cmd == "list-interfaces":
        for i in call(stub, "ListInterfaces", pb.ListInterfacesRequest()).interfaces:
            print(f"{text(i.id):10} vni {i.vni:<6} {i.pci_name:10} {text(i.primary_ipv4):15} "
                  f"{text(i.primary_ipv6):24} underlay {text(i.underlay_route)}")
    elif cmd == "ensure-route":
        vni, pfx, nh_vni, nh = args
        route = pb.Route(prefix=prefix_msg(pfx), nexthop_vni=int(nh_vni), nexthop_address=ip_msg(nh))
        try:
            call(stub, "CreateRoute", pb.CreateRouteRequest(vni=int(vni), route=route))
        except ReplyError as e:
            if e.code != ROUTE_EXISTS:
                raise
    elif cmd == "del-route":
        vni, pfx = args
        call(stub, "DeleteRoute", pb.DeleteRouteRequest(vni=int(vni), route=pb.Route(prefix=prefix_msg(pfx))))
    elif cmd == "list-routes":
        for r in call(stub, "ListRoutes", pb.ListRoutesRequest(vni=int(args[0]))).routes:
            print(f"{text(r.prefix.ip.address)}/{r.prefix.length} via {text(r.nexthop_address.address)} "
                  f"(vni {r.nexthop_vni})")
    elif cmd == "vni-in-use":
        r = call(stub, "CheckVniInUse", pb.CheckVniInUseRequest(vni=int(args[0]), type=pb.VNI_IPV4))
        print("in use" if r.in_use else "not in use")
    else:
        parser.error(f"unknown command {cmd}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReplyError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    except grpc.RpcError as e:
        print(f"gRPC {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
    except ValueError as e:
        print(f"bad argument: {e}", file=sys.stderr)
        sys.exit(1)
