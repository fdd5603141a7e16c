/// A CSV table (RFC 4180: comma-separated, `"`-quoted fields with `""` for a quote,
/// LF or CRLF line ends), read whole.
struct CSVTable {
    /// The first row.
    var header: [String]
    /// The other rows, each with the 1-based line it starts on. Blank lines are skipped.
    var rows: [(line: Int, fields: [String])]

    /// A problem in the text, with the line it is on.
    struct SyntaxError: Error {
        var line: Int
        var message: String
    }

    static func parse(_ text: String) throws(SyntaxError) -> CSVTable {
        var records: [(line: Int, fields: [String])] = []
        var fields: [String] = []
        var field = ""
        var line = 1
        var recordLine = 1
        var inQuotes = false
        var quotedField = false
        var iterator = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = iterator.next()

        func endRecord() {
            fields.append(field)
            let blank = fields.count == 1 && fields[0].isEmpty && !quotedField
            if !blank { records.append((recordLine, fields)) }
            fields = []
            field = ""
            quotedField = false
        }

        while let scalar = pending {
            pending = iterator.next()
            if inQuotes {
                if scalar == "\"" {
                    if pending == "\"" {
                        field.unicodeScalars.append("\"")
                        pending = iterator.next()
                    } else {
                        inQuotes = false
                    }
                } else {
                    if scalar == "\n" { line += 1 }
                    field.unicodeScalars.append(scalar)
                }
                continue
            }
            switch scalar {
            case "\"":
                guard field.isEmpty, !quotedField else {
                    throw SyntaxError(line: line, message: "a quote inside an unquoted field; quote the whole field and double inner quotes")
                }
                inQuotes = true
                quotedField = true
            case ",":
                fields.append(field)
                field = ""
                quotedField = false
            case "\r" where pending == "\n":
                continue
            case "\n":
                endRecord()
                line += 1
                recordLine = line
            default:
                if quotedField {
                    throw SyntaxError(line: line, message: "text after a closing quote")
                }
                field.unicodeScalars.append(scalar)
            }
        }
        if inQuotes { throw SyntaxError(line: recordLine, message: "a quoted field is never closed") }
        if !field.isEmpty || !fields.isEmpty || quotedField { endRecord() }

        guard let first = records.first else { throw SyntaxError(line: 1, message: "the file is empty: expected a header row") }
        return CSVTable(header: first.fields, rows: Array(records.dropFirst()))
    }

    /// One CSV line for `fields`, quoting those that need it.
    static func line(_ fields: [String]) -> String {
        fields.map { field in
            guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
            var quoted = "\""
            for character in field {
                quoted += character == "\"" ? "\"\"" : String(character)
            }
            return quoted + "\""
        }.joined(separator: ",")
    }
}
