import SwiftProtobuf

/// `grpc.health.v1.Health/Check` (gRPC's health checking protocol), with which Envoy's
/// gRPC health checker and Kubernetes' gRPC probes ask whether a server serves.
///
/// The service named `""` (the server as a whole) and each of `services` are known:
/// `SERVING` while `isServing()` says so, `NOT_SERVING` otherwise; any other name is
/// `NOT_FOUND`, as the protocol asks. `Watch` is not served (`UNIMPLEMENTED`): probes
/// call `Check`.
///
/// The two messages are read and written with protobuf's own wrapper types, whose wire
/// form is theirs: `HealthCheckRequest { string service = 1; }` is `StringValue`, and
/// `HealthCheckResponse { ServingStatus status = 1; }` (an enum, a varint) is
/// `Int32Value`.
enum GRPCHealthCheck {
    static let path = "/grpc.health.v1.Health/Check"

    /// `ServingStatus` values.
    static let serving: Int32 = 1
    static let notServing: Int32 = 2

    static func method(services: Set<String>, isServing: @escaping @Sendable () -> Bool) -> GRPCUnaryMethod {
        GRPCUnaryMethod { message, _ in
            let request: Google_Protobuf_StringValue
            do {
                request = try Google_Protobuf_StringValue(serializedBytes: Array(message.readableBytesView))
            } catch {
                return .ready(.failure(GRPCStatus(.internal, "the HealthCheckRequest does not decode: \(error)")))
            }
            guard request.value.isEmpty || services.contains(request.value) else {
                return .ready(.failure(GRPCStatus(.notFound, "unknown service \(request.value)")))
            }
            let response = Google_Protobuf_Int32Value(isServing() ? serving : notServing)
            return .ready(Result { try response.serializedBytes() }.mapError { GRPCStatus(.internal, "\($0)") })
        }
    }
}
