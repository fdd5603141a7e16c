/// A small JSON text builder writing UTF-8 bytes: objects and arrays written in order,
/// strings escaped per RFC 8259, integers printed without allocating. Used for every
/// response body Weir writes, so that answers never go through reflection and their
/// field order is stable: the golden transcript (`Tests/WeirEnvoyTests/Golden`) holds
/// every shape's answers byte for byte, and the decision API writes one per call on the
/// event loop. (Not measured against `JSONEncoder`: the byte-for-byte answers decide it.)
package struct JSONWriter: Sendable {
    package private(set) var bytes: [UInt8]
    private var needsComma = false

    package init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// The JSON text written so far.
    package var text: String { String(decoding: bytes, as: UTF8.self) }

    package mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    package mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    package mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    package mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    /// Writes `"name":` inside an object; the value follows.
    package mutating func key(_ name: String) {
        separate()
        Self.appendQuoted(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    package mutating func string(_ value: String) { separate(); Self.appendQuoted(value, to: &bytes); needsComma = true }
    package mutating func integer(_ value: UInt64) { separate(); Self.appendDecimal(value, to: &bytes); needsComma = true }
    package mutating func integer(_ value: Int) {
        separate()
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        Self.appendDecimal(value.magnitude.toUInt64, to: &bytes)
        needsComma = true
    }
    package mutating func bool(_ value: Bool) { separate(); bytes.append(contentsOf: value ? Self.trueBytes : Self.falseBytes); needsComma = true }
    package mutating func null() { separate(); bytes.append(contentsOf: Self.nullBytes); needsComma = true }
    /// Writes already valid JSON text (a number printed elsewhere, say) as a value.
    package mutating func raw(_ json: String) { separate(); bytes.append(contentsOf: json.utf8); needsComma = true }
    /// Continues the value just written with more valid JSON text (no separator).
    package mutating func appendRaw(_ json: [UInt8]) { bytes.append(contentsOf: json); needsComma = true }

    package mutating func field(_ name: String, _ value: String) { key(name); string(value) }
    /// A string field whose value is given as UTF-8 bytes.
    package mutating func field(_ name: String, utf8 value: [UInt8]) {
        key(name)
        separate()
        Self.appendQuoted(utf8: value, to: &bytes)
        needsComma = true
    }
    package mutating func field(_ name: String, _ value: UInt64) { key(name); integer(value) }
    package mutating func field(_ name: String, _ value: Bool) { key(name); bool(value) }
    package mutating func field(_ name: String, optional value: String?) {
        key(name)
        if let value { string(value) } else { null() }
    }
    package mutating func field(_ name: String, optional value: UInt64?) {
        key(name)
        if let value { integer(value) } else { null() }
    }

    private static let trueBytes = Array("true".utf8)
    private static let falseBytes = Array("false".utf8)
    private static let nullBytes = Array("null".utf8)

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    /// Appends `value` in decimal.
    package static func appendDecimal(_ value: UInt64, to bytes: inout [UInt8]) {
        if value < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for 20 digits
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            while rest > 0 {
                buffer[23 - count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            }
            bytes.append(contentsOf: buffer[(24 - count)...])
        }
    }

    /// Appends `value` as a JSON string literal.
    package static func appendQuoted(_ value: String, to bytes: inout [UInt8]) {
        appendQuoted(utf8: value.utf8, to: &bytes)
    }

    /// Appends the UTF-8 text `value` as a JSON string literal.
    package static func appendQuoted(utf8 value: some Collection<UInt8>, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        var plain = true
        for byte in value where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            plain = false
            break
        }
        if plain {
            bytes.append(contentsOf: value)
        } else {
            for byte in value {
                switch byte {
                case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
                case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
                case UInt8(ascii: "\n"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
                case UInt8(ascii: "\r"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
                case UInt8(ascii: "\t"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    bytes.append(contentsOf: Array("\\u00".utf8))
                    bytes.append(hex[Int(byte >> 4)])
                    bytes.append(hex[Int(byte & 0x0F)])
                default: bytes.append(byte)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension UInt {
    fileprivate var toUInt64: UInt64 { UInt64(self) }
}
