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
        var cursor = buffer.readerIndex
        guard let value = try decode(buffer, at: &cursor, depth: 0) else { return nil }
        buffer.moveReaderIndex(to: cursor)
        return value
    }

    private static let maxDepth = 32
    private static let maxBulkLength = 512 * 1024 * 1024

    private static func line(_ buffer: ByteBuffer, at cursor: inout Int) -> String? {
        let view = buffer.readableBytesView
        let start = cursor - buffer.readerIndex + view.startIndex
        guard start < view.endIndex else { return nil }
        var index = start
        while index + 1 < view.endIndex {
            if view[index] == UInt8(ascii: "\r") && view[index + 1] == UInt8(ascii: "\n") {
                let text = String(decoding: view[start..<index], as: UTF8.self)
                cursor += index - start + 2
                return text
            }
            index += 1
        }
        return nil
    }

    private static func integer(_ text: String) throws -> Int64 {
        guard let value = Int64(text) else { throw ProtocolError(description: "bad RESP integer \(text)") }
        return value
    }

    private static func decode(_ buffer: ByteBuffer, at cursor: inout Int, depth: Int) throws -> RESPValue? {
        guard depth < maxDepth else { throw ProtocolError(description: "RESP nesting deeper than \(maxDepth)") }
        guard cursor < buffer.writerIndex, let type = buffer.getInteger(at: cursor, as: UInt8.self) else { return nil }
        var next = cursor + 1
        guard let header = line(buffer, at: &next) else { return nil }
        switch type {
        case UInt8(ascii: "+"):
            cursor = next
            return .simpleString(header)
        case UInt8(ascii: "-"):
            cursor = next
            return .error(header)
        case UInt8(ascii: ":"):
            cursor = next
            return .integer(try integer(header))
        case UInt8(ascii: "$"):
            let length = try integer(header)
            if length == -1 {
                cursor = next
                return .bulkString(nil)
            }
            guard length >= 0, length <= maxBulkLength else { throw ProtocolError(description: "bad bulk length \(length)") }
            let count = Int(length)
            guard buffer.writerIndex - next >= count + 2, let bytes = buffer.getBytes(at: next, length: count) else { return nil }
            guard buffer.getInteger(at: next + count, as: UInt16.self) == 0x0D0A else {
                throw ProtocolError(description: "bulk string not terminated by CRLF")
            }
            cursor = next + count + 2
            return .bulkString(bytes)
        case UInt8(ascii: "*"):
            let length = try integer(header)
            if length == -1 {
                cursor = next
                return .array(nil)
            }
            guard length >= 0, length <= 1 << 24 else { throw ProtocolError(description: "bad array length \(length)") }
            var elements: [RESPValue] = []
            elements.reserveCapacity(Int(length))
            for _ in 0..<Int(length) {
                guard let element = try decode(buffer, at: &next, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            cursor = next
            return .array(elements)
        default:
            throw ProtocolError(description: "unknown RESP type byte \(type)")
        }
    }
}
