#!/usr/bin/env python3
"""Writes src/xds/envoy_api.pb: the protobuf descriptors skiff needs to read xDS resources (the
four resource types, and every extension whose typed_config skiff understands, with what they
import), taken from the descriptor set the envoy-types crate ships. A resource names its nested
extensions by type URL (an Any); reading it as proto3 JSON needs their descriptors at run time,
and envoy-types does not export its set. Re-run after bumping envoy-types:

    python3 scripts/xds_descriptors.py ~/.cargo/registry/src/*/envoy-types-*/src/generated/types.bin
"""
import sys
from google.protobuf import descriptor_pb2

ROOTS = [
    "envoy/config/listener/v3/", "envoy/config/cluster/v3/", "envoy/config/route/v3/",
    "envoy/config/endpoint/v3/", "envoy/service/discovery/v3/", "envoy/config/trace/v3/zipkin",
    "envoy/type/matcher/v3/",
    "envoy/extensions/filters/http/router/", "envoy/extensions/filters/http/csrf/",
    "envoy/extensions/filters/http/compressor/", "envoy/extensions/filters/http/cors/",
    "envoy/extensions/filters/http/rbac/", "envoy/extensions/filters/http/local_ratelimit/",
    "envoy/extensions/filters/http/fault/", "envoy/extensions/filters/http/ext_authz/",
    "envoy/extensions/filters/http/jwt_authn/", "envoy/extensions/filters/http/decompressor/",
    "envoy/extensions/filters/network/http_connection_manager/",
    "envoy/extensions/filters/network/tcp_proxy/", "envoy/extensions/filters/network/local_ratelimit/",
    "envoy/extensions/filters/network/connection_limit/", "envoy/extensions/filters/network/rbac/",
    "envoy/extensions/filters/listener/tls_inspector/", "envoy/extensions/transport_sockets/tls/v3/",
    "envoy/extensions/transport_sockets/raw_buffer/", "envoy/extensions/access_loggers/file/",
    "envoy/extensions/access_loggers/stream/", "envoy/extensions/compression/",
    "envoy/extensions/retry/host/previous_hosts/", "envoy/extensions/matching/common_inputs/network/",
    "envoy/extensions/upstreams/http/v3/",
]

def main():
    src = descriptor_pb2.FileDescriptorSet()
    with open(sys.argv[1], "rb") as f:
        src.ParseFromString(f.read())
    by_name = {f.name: f for f in src.file}
    keep, order = set(), []

    def add(name):
        if name in keep or name not in by_name:
            return
        keep.add(name)
        for dep in by_name[name].dependency:
            add(dep)
        order.append(name)

    for name in by_name:
        if any(name.startswith(r) for r in ROOTS):
            add(name)
    out = descriptor_pb2.FileDescriptorSet()
    for name in order:
        f = out.file.add()
        f.CopyFrom(by_name[name])
        f.ClearField("source_code_info")
    path = sys.argv[2] if len(sys.argv) > 2 else "src/xds/envoy_api.pb"
    with open(path, "wb") as f:
        f.write(out.SerializeToString())
    print(f"{path}: {len(order)} files of {len(src.file)}")

if __name__ == "__main__":
    main()
