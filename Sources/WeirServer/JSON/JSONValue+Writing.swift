import WeirAnswers

extension JSONValue {
    /// The value as compact JSON text (UTF-8). Numbers keep their literal text, so a
    /// parsed document prints back with the same values; only insignificant whitespace
    /// and string escapes may differ from the original bytes.
    var serialized: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(256)
        write(to: &bytes)
        return bytes
    }

    func write(to bytes: inout [UInt8]) {
        switch self {
        case .null: bytes.append(contentsOf: "null".utf8)
        case .bool(let value): bytes.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let text): bytes.append(contentsOf: text.utf8)
        case .string(let text): JSONWriter.appendQuoted(text, to: &bytes)
        case .array(let elements):
            bytes.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                element.write(to: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let members):
            bytes.append(UInt8(ascii: "{"))
            for (index, member) in members.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                JSONWriter.appendQuoted(member.0, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                member.1.write(to: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// The object with member `name` set to `value` (replacing every member of that
    /// name, in place of the first; appended when absent). Nil for a non-object.
    func setting(_ name: String, to value: JSONValue) -> JSONValue? {
        guard case .object(var members) = self else { return nil }
        if let first = members.firstIndex(where: { $0.0 == name }) {
            members[first].1 = value
            var index = members.count - 1
            while index > first {
                if members[index].0 == name { members.remove(at: index) }
                index -= 1
            }
        } else {
            members.append((name, value))
        }
        return .object(members)
    }
}
