import Foundation
import SwiftProtobuf
import Testing

@testable import WeirEnvoy

/// The hand-written encoding of the RLS answer gives SwiftProtobuf's bytes exactly,
/// and falls back to SwiftProtobuf for fields it does not cover.
@Suite("RateLimitResponse serialized by hand")
struct RateLimitResponseSerializerTests {
    typealias Response = Envoy_Service_Ratelimit_V3_RateLimitResponse

    static func header(_ key: String, _ value: String) -> Envoy_Config_Core_V3_HeaderValue {
        var header = Envoy_Config_Core_V3_HeaderValue()
        header.key = key
        header.value = value
        return header
    }

    static func status(
        _ code: Response.Code, limit: UInt32 = 0, unit: Response.RateLimit.Unit = .unknown, multiplier: UInt32? = nil,
        name: String = "", remaining: UInt32 = 0, seconds: Int64? = nil, nanos: Int32 = 0
    ) -> Response.DescriptorStatus {
        var status = Response.DescriptorStatus()
        status.code = code
        if limit != 0 || unit != .unknown || multiplier != nil || !name.isEmpty {
            var rateLimit = Response.RateLimit()
            rateLimit.requestsPerUnit = limit
            rateLimit.unit = unit
            rateLimit.name = name
            if let multiplier {
                var wrapped = Google_Protobuf_UInt32Value()
                wrapped.value = multiplier
                rateLimit.unitMultiplier = wrapped
            }
            status.currentLimit = rateLimit
        }
        status.limitRemaining = remaining
        if let seconds {
            var duration = Google_Protobuf_Duration()
            duration.seconds = seconds
            duration.nanos = nanos
            status.durationUntilReset = duration
        }
        return status
    }

    /// Answers like the service's, and edge cases of every covered field.
    static let responses: [(String, Response)] = {
        var allowed = Response()
        allowed.overallCode = .ok
        allowed.statuses = [
            status(.ok, limit: 20, unit: .minute, name: "text/MiniMax-M2 requests (rule text-minimax-m2, tier free)",
                   remaining: 19, seconds: 59, nanos: 250_000_000)
        ]
        allowed.responseHeadersToAdd = [
            header("x-ratelimit-limit-requests", "20"), header("x-ratelimit-remaining-requests", "19"),
            header("x-ratelimit-reset-requests", "59.25s"), header("x-ratelimit-limit-tokens", "1000000"),
            header("x-ratelimit-remaining-tokens", "1000000"), header("x-ratelimit-reset-tokens", "0s"),
            header("RateLimit-Policy", #""requests";q=20;w=60, "tokens";q=1000000;w=60;qu="tokens""#),
            header("RateLimit", #""requests";r=19;t=60, "tokens";r=1000000;t=0"#),
        ]

        var denied = allowed
        denied.overallCode = .overLimit
        denied.statuses = [
            status(.ok),
            status(.overLimit, limit: UInt32.max, unit: .hour, multiplier: 5, name: String(repeating: "n", count: 200),
                   remaining: 0, seconds: 0, nanos: 1_000_000),
            status(.overLimit, unit: .day, multiplier: 0, remaining: UInt32.max, seconds: Int64.max),
            Response.DescriptorStatus(),
        ]
        denied.responseHeadersToAdd.append(header("Retry-After", "45"))
        denied.responseHeadersToAdd.append(header("content-type", "application/json"))
        denied.responseHeadersToAdd.append(header("x-ünïcödé", "välüé ✓"))
        denied.rawBody = Data(repeating: 0x7B, count: 300)

        var unrecognized = Response()
        unrecognized.overallCode = .UNRECOGNIZED(-1)
        unrecognized.statuses = [status(.UNRECOGNIZED(7), unit: .UNRECOGNIZED(-3), seconds: -5, nanos: -1)]

        var rawHeader = Response()
        var raw = Self.header("x-raw", "")
        raw.rawValue = Data([0, 1, 2, 255])
        rawHeader.responseHeadersToAdd = [raw, Self.header("", "only-value")]

        return [("allowed", allowed), ("denied", denied), ("unrecognized enums, negative numbers", unrecognized),
                ("raw header values", rawHeader), ("empty", Response())]
    }()

    @Test("the same bytes as SwiftProtobuf", arguments: responses.map(\.0))
    func sameBytes(name: String) throws {
        let response = try #require(Self.responses.first { $0.0 == name }?.1)
        let expected: [UInt8] = try response.serializedBytes()
        let encoded = try #require(RateLimitResponseWireFormat.encode(response))
        #expect(encoded == expected)
        let serialized: [UInt8] = try RateLimitResponseSerializer().serialize(response)
        #expect(serialized == expected)
        #expect(try Response(serializedBytes: serialized) == response)
    }

    @Test("a field it does not cover goes to SwiftProtobuf")
    func fallback() throws {
        var response = Self.responses[0].1
        response.requestHeadersToAdd = [Self.header("x-weir", "1")]
        #expect(RateLimitResponseWireFormat.encode(response) == nil)
        let serialized: [UInt8] = try RateLimitResponseSerializer().serialize(response)
        #expect(try Response(serializedBytes: serialized) == response)

        var unknown = Self.responses[0].1
        unknown.statuses[0].unknownFields = try Response.DescriptorStatus(serializedBytes: [0x78, 0x01]).unknownFields
        #expect(!unknown.statuses[0].unknownFields.data.isEmpty)
        #expect(RateLimitResponseWireFormat.encode(unknown) == nil)
        let unknownSerialized: [UInt8] = try RateLimitResponseSerializer().serialize(unknown)
        #expect(unknownSerialized == (try unknown.serializedBytes() as [UInt8]))
    }

    @Test("varint sizes at every 7-bit boundary")
    func varintSizes() {
        #expect(RateLimitResponseWireFormat.varintSize(0) == 1)
        for bits in 1...64 {
            let value: UInt64 = bits == 64 ? .max : (1 << UInt64(bits)) - 1
            #expect(RateLimitResponseWireFormat.varintSize(value) == (bits + 6) / 7, "\(bits) bits")
        }
    }
}
