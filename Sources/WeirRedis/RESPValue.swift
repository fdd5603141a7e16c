import NIOCore

/// One RESP2 value, as Redis sends it (the client never sends `HELLO 3`, so
/// replies are always RESP2: simple strings, errors, integers, bulk strings and
/// arrays, with null bulk strings and null arrays).
public enum RESPValue: Sendable, Hashable {
    case simpleString(String)
    /// An error reply (`-ERR ...`, `-NOSCRIPT ...`): an answer, not a transport failure.
    case error(String)
    case integer(Int64)
    /// A bulk string; nil for the null bulk string (`$-1`).
    case bulkString([UInt8]?)
    /// An array; nil for the null array (`*-1`).
    case array([RESPValue]?)

    /// The value as text: simple and bulk strings, and integers in decimal.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes?): String(decoding: bytes, as: UTF8.self)
        case .integer(let value): String(value)
        default: nil
        }
    }

    /// The error message, when the value is an error reply.
    public var errorMessage: String? {
        if case .error(let message) = self { return message }
        return nil
    }

    /// Whether the value is a null bulk string or a null array.
    public var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): true
        default: false
        }
    }
}

/// RESP2 encoding of commands and incremental decoding of replies.
enum RESPCoding {
    /// Appends `arguments` as one command (an array of bulk strings) to `buffer`, in one
    /// write of the buffer (its capacity reserved once, the bytes copied by pointer).
    static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        // Each header: a type byte, at most 20 digits, CRLF; each argument: its bytes, CRLF.
        var size = 23
        for argument in arguments { size += 25 + argument.utf8.count }
        _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            var at = 0
            func header(_ type: UInt8, _ value: Int) {
                raw[at] = type
                var digits = 1
                var rest = value / 10
                while rest > 0 { digits += 1; rest /= 10 }
                var number = value
                for index in stride(from: at + digits, to: at, by: -1) {
                    raw[index] = UInt8(truncatingIfNeeded: 48 + number % 10)
                    number /= 10
                }
                at += digits + 1
                raw[at] = 13
                raw[at + 1] = 10
                at += 2
            }
            header(42, arguments.count)
            for argument in arguments {
                var text = argument
                text.withUTF8 { bytes in
                    header(36, bytes.count)
                    if let base = bytes.baseAddress {
                        (raw.baseAddress! + at).copyMemory(from: base, byteCount: bytes.count)
                    }
                    at += bytes.count
                }
                raw[at] = 13
                raw[at + 1] = 10
                at += 2
            }
            return at
        }
    }

    /// A reply that does not follow RESP2: the connection cannot be trusted any more.
    struct ProtocolError: Error, CustomStringConvertible {
        var description: String
    }

    /// Decodes one complete value from the front of `buffer` and consumes it, or
    /// returns nil (consuming nothing) when the value has not fully arrived yet.
    static func decode(from buffer: inout ByteBuffer) throws -> RESPValue? {
        let decoded = try buffer.withUnsafeReadableBytes { bytes -> (RESPValue, Int)? in
            var cursor = 0
            guard let value = try decode(bytes, at: &cursor, depth: 0) else { return nil }
            return (value, cursor)
        }
        guard let (value, consumed) = decoded else { return nil }
        buffer.moveReaderIndex(forwardBy: consumed)
        return value
    }

    private static let maxDepth = 32
    private static let maxBulkLength = 512 * 1024 * 1024

    /// The offset of the CR of the first CRLF at or after `start`, or nil when none has
    /// arrived yet.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        while index + 1 < bytes.count {
            if bytes[index] == 13 && bytes[index + 1] == 10 { return index }
            index += 1
        }
        return nil
    }

    /// The decimal integer in `bytes[start..<end]` (an optional `-`, then digits).
    private static func integer(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws -> Int64 {
        var index = start
        let negative = index < end && bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard index < end, end - index <= 20 else { throw badInteger(bytes, start, end) }
        // The magnitude, up to 2^63 (Int64.min's), in a UInt64.
        var magnitude: UInt64 = 0
        while index < end {
            let digit = bytes[index] &- 48
            guard digit < 10 else { throw badInteger(bytes, start, end) }
            let (times, overflow) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, carry) = times.addingReportingOverflow(UInt64(digit))
            guard !overflow, !carry else { throw badInteger(bytes, start, end) }
            magnitude = sum
            index += 1
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { throw badInteger(bytes, start, end) }
            return Int64(truncatingIfNeeded: 0 &- magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { throw badInteger(bytes, start, end) }
        return Int64(magnitude)
    }

    private static func text(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }

    private static func badInteger(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> ProtocolError {
        ProtocolError(description: "bad RESP integer \(text(bytes, start, end))")
    }

    private static func decode(_ bytes: UnsafeRawBufferPointer, at cursor: inout Int, depth: Int) throws -> RESPValue? {
        guard depth < maxDepth else { throw ProtocolError(description: "RESP nesting deeper than \(maxDepth)") }
        guard cursor < bytes.count else { return nil }
        let type = bytes[cursor]
        let start = cursor + 1
        guard let end = lineEnd(bytes, from: start) else { return nil }
        let next = end + 2
        switch type {
        case UInt8(ascii: "+"):
            cursor = next
            return .simpleString(text(bytes, start, end))
        case UInt8(ascii: "-"):
            cursor = next
            return .error(text(bytes, start, end))
        case UInt8(ascii: ":"):
            cursor = next
            return .integer(try integer(bytes, start, end))
        case UInt8(ascii: "$"):
            let length = try integer(bytes, start, end)
            if length == -1 {
                cursor = next
                return .bulkString(nil)
            }
            guard length >= 0, length <= maxBulkLength else { throw ProtocolError(description: "bad bulk length \(length)") }
            let count = Int(length)
            guard bytes.count - next >= count + 2 else { return nil }
            guard bytes[next + count] == 13, bytes[next + count + 1] == 10 else {
                throw ProtocolError(description: "bulk string not terminated by CRLF")
            }
            cursor = next + count + 2
            return .bulkString(Array(bytes[next..<(next + count)]))
        case UInt8(ascii: "*"):
            let length = try integer(bytes, start, end)
            if length == -1 {
                cursor = next
                return .array(nil)
            }
            guard length >= 0, length <= 1 << 24 else { throw ProtocolError(description: "bad array length \(length)") }
            var elements: [RESPValue] = []
            elements.reserveCapacity(Int(length))
            var position = next
            for _ in 0..<Int(length) {
                guard let element = try decode(bytes, at: &position, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            cursor = position
            return .array(elements)
        default:
            throw ProtocolError(description: "unknown RESP type byte \(type)")
        }
    }
}
