import Foundation
import Testing
import WeirRedisTesting

/// The gRPC port against a second, independent client: Python's `grpcio` (installed by
/// `scripts/install-deps --tests`) and raw HTTP/2 frames (`Conformance/grpc_conformance.py`).
@Suite("gRPC conformance with grpcio", .timeLimit(.minutes(2)))
struct GRPCConformanceTests {
    @Test("grpcio: answers, many streams, gRPC's statuses, health, cancelled calls, reset connections, malformed frames")
    func conformance() async throws {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let script = here.appendingPathComponent("Conformance/grpc_conformance.py").path
        let protos = here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Protos").path
        let scratch = scratchDirectory()
        // Messages over 4 KiB are refused, so that the oversized call needs no megabyte.
        let harness = WeirHarness(maxBodySize: 4_096)
        try await harness.run { client, port in
            let run = try await ChildProcess.run("/usr/bin/env", ["python3", script, String(port), protos, scratch])
            guard run.status == 0 else {
                throw HarnessError("grpc_conformance.py exited \(run.status) (scripts/install-deps --tests installs grpcio):\n\(run.error)")
            }
            let seen = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])

            let one = try #require(seen["one"] as? [String: Any])
            #expect(one["code"] as? String == "OK")
            #expect(one["overall"] as? String == "OK")
            #expect(one["limit"] as? Int == 20)
            #expect(one["remaining"] as? Int == 19)
            #expect((one["headers"] as? [String: String])?["x-ratelimit-remaining-requests"] == "19")

            // 200 calls at once on one connection: exactly the limit admitted.
            let many = try #require(seen["many"] as? [String: Int])
            #expect(many["ok"] == 20)
            #expect(many["over_limit"] == 180)

            #expect(seen["unknown_method"] as? String == "UNIMPLEMENTED")
            #expect(seen["unknown_service"] as? String == "UNIMPLEMENTED")
            #expect(seen["malformed_message"] as? String == "INTERNAL")
            #expect(seen["oversized"] as? String == "RESOURCE_EXHAUSTED")
            #expect(seen["compressed"] as? String == "UNIMPLEMENTED")
            #expect(seen["with_deadline"] as? String == "OK")
            // HealthCheckResponse{status: SERVING}; an unknown service is NOT_FOUND.
            #expect(seen["health"] as? String == "0801")
            #expect(seen["health_service"] as? String == "0801")
            #expect(seen["health_unknown"] as? String == "NOT_FOUND")
            #expect(seen["cancelled_settled"] as? Int == 100)

            // Broken peers get GOAWAY with HTTP/2's error code: COMPRESSION_ERROR (9),
            // PROTOCOL_ERROR (1), FRAME_SIZE_ERROR (6).
            #expect(seen["goaway_bad_hpack"] as? Int == 9)
            #expect(seen["goaway_data_on_stream_0"] as? Int == 1)
            #expect(seen["goaway_not_http2"] as? Int == 6)
            #expect(seen["after"] as? String == "OK")

            // The calls that went through were counted once each, and nothing broke the
            // server: its metrics answer.
            let metrics = try await client.metrics()
            #expect(metrics.contains("weir_envoy_requests_total"))
        }
    }
}
