"""One call to a gRPC rate limit service, with Python's grpcio; prints what came back.

Usage: rls_call.py PORT should ACCOUNT   -> OK | OVER_LIMIT | the gRPC status's name
       rls_call.py PORT health           -> the HealthCheckResponse in hex | the status's name
The request is encoded by hand (ShouldRateLimit{domain "weir", one descriptor
account/api=text/model=MiniMax-M2}), and only overall_code (field 1) of the answer is read.
"""
import sys

import grpc

port, what = sys.argv[1], sys.argv[2]


def field(number, payload):
    return bytes([number << 3 | 2, len(payload)]) + payload


with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    try:
        if what == "health":
            print(channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5).hex())
        else:
            entry = lambda k, v: field(1, field(1, k.encode()) + field(2, v.encode()))
            descriptor = entry("account", sys.argv[3]) + entry("api", "text") + entry("model", "MiniMax-M2")
            answer = channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")(
                field(1, b"weir") + field(2, descriptor), timeout=5)
            print({b"\x08\x01": "OK", b"\x08\x02": "OVER_LIMIT"}.get(answer[:2], answer.hex()))
    except grpc.RpcError as error:
        print(error.code().name)
