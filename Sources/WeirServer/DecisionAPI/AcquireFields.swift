/// The members of a `/v1/acquire` body that the decision reads, each as its JSON value
/// (nil when absent). Validation works on this, whichever way it was read.
struct AcquireFields: Equatable {
    var apiKey: JSONValue?
    var account: JSONValue?
    var api: JSONValue?
    var model: JSONValue?
    var units: JSONValue?
    var leaseTTL: JSONValue?
    var maxWait: JSONValue?

    /// The fields of a parsed object (the last of repeated members, as `JSONValue`'s
    /// subscript reads them).
    init(_ object: JSONValue) {
        apiKey = object["api_key"]
        account = object["account"]
        api = object["api"]
        model = object["model"]
        units = object["units"]
        leaseTTL = object["lease_ttl_ms"]
        maxWait = object["max_wait_ms"]
    }

    /// No fields: the scanner's starting point.
    fileprivate init(empty: Void) {}

    /// Reads a flat object (scalar members only, strings without escapes) straight from
    /// its bytes, without building a `JSONValue` tree: the shape every well-behaved
    /// client sends. Returns nil for anything else, valid or not; the caller then uses
    /// `JSONParser`, which accepts the same valid bodies with the same meaning and words
    /// the errors. So this is only ever a shortcut, never a second grammar to trust.
    static func scanFlat(_ bytes: [UInt8]) -> AcquireFields? {
        bytes.withUnsafeBufferPointer { scan($0) }
    }

    private static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> AcquireFields? {
        var scanner = FlatScanner(bytes: bytes)
        return scanner.scan()
    }
}

/// The cursor of `AcquireFields.scanFlat`: a struct with mutating methods, so that
/// nothing is captured or boxed.
private struct FlatScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
            index += 1
        }
    }

    /// A string without escapes or control characters; its bounds, past the quotes.
    mutating func plainString() -> Range<Int>? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        index += 1
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                index += 1
                return start..<(index - 1)
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            index += 1
        }
        return nil
    }

    func equals(_ range: Range<Int>, _ name: StaticString) -> Bool {
        guard range.count == name.utf8CodeUnitCount else { return false }
        let pointer = name.utf8Start
        for offset in 0..<range.count where bytes[range.lowerBound + offset] != pointer[offset] { return false }
        return true
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let length = word.utf8CodeUnitCount
        guard index + length <= bytes.count else { return false }
        let pointer = word.utf8Start
        for offset in 0..<length where bytes[index + offset] != pointer[offset] { return false }
        index += length
        return true
    }

    mutating func digits() -> Bool {
        let first = index
        while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
        return index > first
    }

    /// A number per RFC 8259; its text.
    mutating func number() -> Range<Int>? {
        let start = index
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 else { return nil }
        if bytes[index] == UInt8(ascii: "0") { index += 1 } else { _ = digits() }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digits() else { return nil }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits() else { return nil }
        }
        return start..<index
    }

    func text(_ range: Range<Int>) -> String? {
        String(validating: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    mutating func scan() -> AcquireFields? {
        var fields = AcquireFields(empty: ())
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
        } else {
            while true {
                skipWhitespace()
                guard let name = plainString() else { return nil }
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
                index += 1
                skipWhitespace()
                guard index < bytes.count else { return nil }
                let value: JSONValue
                switch bytes[index] {
                case UInt8(ascii: "\""):
                    guard let range = plainString(), let string = text(range) else { return nil }
                    value = .string(string)
                case UInt8(ascii: "t"):
                    guard literal("true") else { return nil }
                    value = .bool(true)
                case UInt8(ascii: "f"):
                    guard literal("false") else { return nil }
                    value = .bool(false)
                case UInt8(ascii: "n"):
                    guard literal("null") else { return nil }
                    value = .null
                case UInt8(ascii: "-"), 0x30...0x39:
                    guard let range = number(), let digits = text(range) else { return nil }
                    value = .number(digits)
                default:
                    return nil  // nested value, or not JSON
                }
                if equals(name, "api_key") {
                    fields.apiKey = value
                } else if equals(name, "account") {
                    fields.account = value
                } else if equals(name, "api") {
                    fields.api = value
                } else if equals(name, "model") {
                    fields.model = value
                } else if equals(name, "units") {
                    fields.units = value
                } else if equals(name, "lease_ttl_ms") {
                    fields.leaseTTL = value
                } else if equals(name, "max_wait_ms") {
                    fields.maxWait = value
                } else if text(name) == nil {
                    return nil  // member names must be valid UTF-8 too (the parser checks them)
                }
                skipWhitespace()
                guard index < bytes.count else { return nil }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; break }
                return nil
            }
        }
        skipWhitespace()
        return index == bytes.count ? fields : nil
    }
}
