"""gRPC conformance of Weir's rate limit service, seen by a second, independent client:
Python's grpcio (installed by scripts/install-deps --tests), plus raw HTTP/2 frames for
what no well-behaved client sends.

Usage: grpc_conformance.py PORT PROTO_DIR OUT_DIR
Prints one JSON object: what each check saw. The Swift test (GRPCConformanceTests)
asserts on it; this script asserts nothing itself.
"""
import importlib.resources
import json
import os
import socket
import struct
import sys
import threading

import grpc
from grpc_tools import protoc

port, proto_dir, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
target = f"127.0.0.1:{port}"

# The service's messages, generated from the repository's own .proto files.
well_known = str(importlib.resources.files("grpc_tools") / "_proto")
protos = [os.path.relpath(os.path.join(root, name), proto_dir)
          for root, _, names in os.walk(proto_dir) for name in names if name.endswith(".proto")]
if protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}"] + protos) != 0:
    sys.exit("protoc failed")
# Regular packages, so that pip's `envoy` package (the Envoy binary) does not hide them.
for root, _, _ in os.walk(os.path.join(out_dir, "envoy")):
    open(os.path.join(root, "__init__.py"), "a").close()
sys.path.insert(0, out_dir)
from envoy.service.ratelimit.v3 import rls_pb2  # noqa: E402

SHOULD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
out = {}


def request(account="conf-1", model="MiniMax-M2", extra=None):
    message = rls_pb2.RateLimitRequest(domain="weir")
    descriptor = message.descriptors.add()
    for key, value in [("account", account), ("api", "text"), ("model", model)] + (extra or []):
        entry = descriptor.entries.add()
        entry.key, entry.value = key, value
    return message


def code_of(call):
    """The status a call ended with, as its name."""
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


with grpc.insecure_channel(target) as channel:
    should = channel.unary_unary(SHOULD, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=rls_pb2.RateLimitResponse.FromString)
    raw_should = channel.unary_unary(SHOULD)  # bytes in, bytes out
    health = channel.unary_unary("/grpc.health.v1.Health/Check")

    # One call, its answer and its trailing metadata.
    answer, call = should.with_call(request(), timeout=10)
    out["one"] = {
        "overall": rls_pb2.RateLimitResponse.Code.Name(answer.overall_code),
        "limit": answer.statuses[0].current_limit.requests_per_unit,
        "remaining": answer.statuses[0].limit_remaining,
        "headers": {h.key: h.value for h in answer.response_headers_to_add},
        "code": call.code().name,
    }

    # Many streams on one connection at once: 200 calls of one account limited to 20 a
    # minute; exactly 20 are OK, whatever the order they are decided in.
    futures = [should.future(request("conf-many"), timeout=30) for _ in range(200)]
    codes = [rls_pb2.RateLimitResponse.Code.Name(f.result().overall_code) for f in futures]
    out["many"] = {"ok": codes.count("OK"), "over_limit": codes.count("OVER_LIMIT")}

    # gRPC's rules.
    out["unknown_method"] = code_of(lambda: channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/Nope")(b"", timeout=10))
    out["unknown_service"] = code_of(lambda: channel.unary_unary("/no.Such/Method")(b"", timeout=10))
    out["malformed_message"] = code_of(lambda: raw_should(b"\xff\xff\xff\xff", timeout=10))
    out["oversized"] = code_of(lambda: should(request(extra=[("pad", "x" * 8192)]), timeout=10))
    # Large enough that gzip makes it smaller (grpc sends a message uncompressed otherwise).
    out["compressed"] = code_of(lambda: should(request(extra=[("pad", "x" * 3000)]), timeout=10, compression=grpc.Compression.Gzip))
    out["with_deadline"] = code_of(lambda: should(request("conf-deadline"), timeout=5))
    out["health"] = health(b"", timeout=10).hex()
    out["health_service"] = health(b"\x0a\x2benvoy.service.ratelimit.v3.RateLimitService", timeout=10).hex()
    out["health_unknown"] = code_of(lambda: health(b"\x0a\x03abc", timeout=10))

    # Calls cancelled by the client as they go.
    cancelled = [should.future(request("conf-cancel"), timeout=30) for _ in range(100)]
    for future in cancelled[::2]:
        future.cancel()
    settled = 0
    for future in cancelled:
        try:
            future.result()
            settled += 1
        except grpc.FutureCancelledError:
            settled += 1
        except grpc.RpcError:
            settled += 1
    out["cancelled_settled"] = settled

# Connections reset with calls in flight: each channel closed at once after 20 calls
# are started on it.
for _ in range(10):
    channel = grpc.insecure_channel(target)
    stub = channel.unary_unary(SHOULD, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=rls_pb2.RateLimitResponse.FromString)
    pending = [stub.future(request("conf-reset"), timeout=30) for _ in range(20)]
    channel.close()


# Raw HTTP/2: what a broken or hostile peer sends. Each returns the GOAWAY error code
# the server answered with (or None if the connection closed without one).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def goaway_after(payload_frames):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(PREFACE + frame(4, 0, 0, b"") + b"".join(payload_frames))
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            # Walk the frames read so far, looking for GOAWAY (type 7).
            offset = 0
            while offset + 9 <= len(data):
                length = int.from_bytes(data[offset:offset + 3], "big")
                kind = data[offset + 3]
                if offset + 9 + length > len(data):
                    break
                if kind == 7:
                    payload = data[offset + 9:offset + 9 + length]
                    sock.close()
                    return int.from_bytes(payload[4:8], "big")
                offset += 9 + length
    except socket.timeout:
        return "timeout"
    sock.close()
    return None


out["goaway_bad_hpack"] = goaway_after([frame(1, 0x5, 1, b"\xff\xff\xff\xff\xff")])
out["goaway_data_on_stream_0"] = goaway_after([frame(0, 0x1, 0, b"abc")])
out["goaway_not_http2"] = goaway_after([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2])

# After all that, a new connection is served as the first was.
with grpc.insecure_channel(target) as channel:
    should = channel.unary_unary(SHOULD, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=rls_pb2.RateLimitResponse.FromString)
    out["after"] = rls_pb2.RateLimitResponse.Code.Name(should(request("conf-after"), timeout=10).overall_code)

print(json.dumps(out))
