import Foundation
import GRPCCore
import GRPCProtobuf
import SwiftProtobuf

/// Serializes `RateLimitResponse` for the wire by hand: the same bytes as
/// SwiftProtobuf's binary encoding (fields in field-number order, defaults omitted),
/// written straight into the message buffer.
///
/// Why: SwiftProtobuf's encoder walks the message twice (sizes, then bytes) through
/// generic visitors that grpc-swift calls unspecialized, with a heap allocation per
/// element of a repeated message field; an answer carries about ten
/// (`response_headers_to_add`, `statuses`), on every `ShouldRateLimit`.
///
/// Covers every field the service sets: `overall_code`, `statuses` (`code`,
/// `current_limit` with `requests_per_unit`, `unit`, `name`, `unit_multiplier`,
/// `limit_remaining`, `duration_until_reset`), `response_headers_to_add` and
/// `raw_body`. A response with anything else (`request_headers_to_add`, unknown
/// fields) goes to SwiftProtobuf's encoder. A test checks both give the same bytes.
///
/// Concurrency: stateless; `Sendable`.
struct RateLimitResponseSerializer: MessageSerializer {
    typealias Message = Envoy_Service_Ratelimit_V3_RateLimitResponse

    func serialize<Bytes: GRPCContiguousBytes>(_ message: Message) throws -> Bytes {
        guard let size = RateLimitResponseWireFormat.encodedSize(of: message) else {
            return try ProtobufSerializer<Message>().serialize(message)
        }
        var bytes = Bytes(repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = RateLimitResponseWireFormat.Writer(buffer: buffer)
            writer.write(message)
            precondition(writer.offset == size, "RateLimitResponse: wrote \(writer.offset) bytes, sized \(size)")
        }
        return bytes
    }
}

/// The protobuf binary encoding of `RateLimitResponse`, for the fields
/// `RateLimitResponseSerializer` covers. All field numbers are below 16, so every tag
/// is one byte.
enum RateLimitResponseWireFormat {
    typealias Response = Envoy_Service_Ratelimit_V3_RateLimitResponse

    /// The encoded size of `response` in bytes, or nil when it has a field this
    /// encoding does not cover.
    static func encodedSize(of response: Response) -> Int? {
        guard response.requestHeadersToAdd.isEmpty, response.unknownFields.data.isEmpty else { return nil }
        var size = 0
        if response.overallCode != .unknown { size += 1 + varintSize(enumValue(response.overallCode.rawValue)) }
        for status in response.statuses {
            guard let length = encodedSize(of: status) else { return nil }
            size += delimitedSize(length)
        }
        for header in response.responseHeadersToAdd {
            guard let length = encodedSize(of: header) else { return nil }
            size += delimitedSize(length)
        }
        if !response.rawBody.isEmpty { size += delimitedSize(response.rawBody.count) }
        return size
    }

    /// The encoding of `response` as an array (tests compare it with SwiftProtobuf's).
    static func encode(_ response: Response) -> [UInt8]? {
        guard let size = encodedSize(of: response) else { return nil }
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { buffer in
            var writer = Writer(buffer: buffer)
            writer.write(response)
        }
        return bytes
    }

    static func encodedSize(of status: Response.DescriptorStatus) -> Int? {
        guard status.unknownFields.data.isEmpty else { return nil }
        var size = 0
        if status.code != .unknown { size += 1 + varintSize(enumValue(status.code.rawValue)) }
        if status.hasCurrentLimit {
            guard let length = encodedSize(of: status.currentLimit) else { return nil }
            size += delimitedSize(length)
        }
        if status.limitRemaining != 0 { size += 1 + varintSize(UInt64(status.limitRemaining)) }
        if status.hasDurationUntilReset {
            guard let length = encodedSize(of: status.durationUntilReset) else { return nil }
            size += delimitedSize(length)
        }
        return size
    }

    static func encodedSize(of limit: Response.RateLimit) -> Int? {
        guard limit.unknownFields.data.isEmpty else { return nil }
        var size = 0
        if limit.requestsPerUnit != 0 { size += 1 + varintSize(UInt64(limit.requestsPerUnit)) }
        if limit.unit != .unknown { size += 1 + varintSize(enumValue(limit.unit.rawValue)) }
        if !limit.name.isEmpty { size += delimitedSize(limit.name.utf8.count) }
        if limit.hasUnitMultiplier {
            guard limit.unitMultiplier.unknownFields.data.isEmpty else { return nil }
            size += delimitedSize(wrapperSize(limit.unitMultiplier.value))
        }
        return size
    }

    static func encodedSize(of duration: Google_Protobuf_Duration) -> Int? {
        guard duration.unknownFields.data.isEmpty else { return nil }
        return durationSize(duration)
    }

    static func encodedSize(of header: Envoy_Config_Core_V3_HeaderValue) -> Int? {
        guard header.unknownFields.data.isEmpty else { return nil }
        var size = 0
        if !header.key.isEmpty { size += delimitedSize(header.key.utf8.count) }
        if !header.value.isEmpty { size += delimitedSize(header.value.utf8.count) }
        if !header.rawValue.isEmpty { size += delimitedSize(header.rawValue.count) }
        return size
    }

    private static func durationSize(_ duration: Google_Protobuf_Duration) -> Int {
        var size = 0
        if duration.seconds != 0 { size += 1 + varintSize(UInt64(bitPattern: duration.seconds)) }
        if duration.nanos != 0 { size += 1 + varintSize(UInt64(bitPattern: Int64(duration.nanos))) }
        return size
    }

    private static func wrapperSize(_ value: UInt32) -> Int {
        value == 0 ? 0 : 1 + varintSize(UInt64(value))
    }

    /// Tag, length and content of a length-delimited field of `length` bytes.
    private static func delimitedSize(_ length: Int) -> Int {
        1 + varintSize(UInt64(length)) + length
    }

    /// Enums go on the wire as their value sign-extended to 64 bits.
    static func enumValue(_ rawValue: Int) -> UInt64 {
        UInt64(bitPattern: Int64(rawValue))
    }

    static func varintSize(_ value: UInt64) -> Int {
        (64 - (value | 1).leadingZeroBitCount + 6) / 7
    }

    /// Writes fields into a buffer sized by `encodedSize`.
    struct Writer {
        let buffer: UnsafeMutableRawBufferPointer
        private(set) var offset = 0

        init(buffer: UnsafeMutableRawBufferPointer) {
            self.buffer = buffer
        }

        mutating func write(_ response: Response) {
            if response.overallCode != .unknown { varintField(1, enumValue(response.overallCode.rawValue)) }
            for status in response.statuses {
                tag(2, wireType: 2)
                varint(UInt64(encodedSize(of: status)!))
                write(status)
            }
            for header in response.responseHeadersToAdd {
                tag(3, wireType: 2)
                varint(UInt64(encodedSize(of: header)!))
                if !header.key.isEmpty { stringField(1, header.key) }
                if !header.value.isEmpty { stringField(2, header.value) }
                if !header.rawValue.isEmpty { bytesField(3, header.rawValue) }
            }
            if !response.rawBody.isEmpty { bytesField(5, response.rawBody) }
        }

        private mutating func write(_ status: Response.DescriptorStatus) {
            if status.code != .unknown { varintField(1, enumValue(status.code.rawValue)) }
            if status.hasCurrentLimit {
                let limit = status.currentLimit
                tag(2, wireType: 2)
                varint(UInt64(encodedSize(of: limit)!))
                if limit.requestsPerUnit != 0 { varintField(1, UInt64(limit.requestsPerUnit)) }
                if limit.unit != .unknown { varintField(2, enumValue(limit.unit.rawValue)) }
                if !limit.name.isEmpty { stringField(3, limit.name) }
                if limit.hasUnitMultiplier {
                    let value = limit.unitMultiplier.value
                    tag(4, wireType: 2)
                    varint(UInt64(wrapperSize(value)))
                    if value != 0 { varintField(1, UInt64(value)) }
                }
            }
            if status.limitRemaining != 0 { varintField(3, UInt64(status.limitRemaining)) }
            if status.hasDurationUntilReset {
                let duration = status.durationUntilReset
                tag(4, wireType: 2)
                varint(UInt64(durationSize(duration)))
                if duration.seconds != 0 { varintField(1, UInt64(bitPattern: duration.seconds)) }
                if duration.nanos != 0 { varintField(2, UInt64(bitPattern: Int64(duration.nanos))) }
            }
        }

        private mutating func tag(_ field: UInt8, wireType: UInt8) {
            byte(field << 3 | wireType)
        }

        private mutating func varintField(_ field: UInt8, _ value: UInt64) {
            tag(field, wireType: 0)
            varint(value)
        }

        private mutating func stringField(_ field: UInt8, _ value: String) {
            tag(field, wireType: 2)
            var value = value
            value.withUTF8 { utf8 in
                varint(UInt64(utf8.count))
                raw(UnsafeRawBufferPointer(utf8))
            }
        }

        private mutating func bytesField(_ field: UInt8, _ value: Data) {
            tag(field, wireType: 2)
            varint(UInt64(value.count))
            value.withUnsafeBytes { raw($0) }
        }

        private mutating func varint(_ value: UInt64) {
            var value = value
            while value >= 0x80 {
                byte(UInt8(truncatingIfNeeded: value) | 0x80)
                value >>= 7
            }
            byte(UInt8(value))
        }

        private mutating func byte(_ value: UInt8) {
            buffer[offset] = value
            offset += 1
        }

        private mutating func raw(_ bytes: UnsafeRawBufferPointer) {
            guard bytes.count > 0 else { return }
            UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + bytes.count]).copyMemory(from: bytes)
            offset += bytes.count
        }
    }
}
