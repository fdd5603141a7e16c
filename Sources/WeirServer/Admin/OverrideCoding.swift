import WeirAnswers
import WeirPolicy

/// Overrides as JSON: `[{"rule", "model"?, "requests"?, "tokens"?, "concurrency"?}]`,
/// the shape of the admin API and of the registry's `overrides` column.
enum OverrideCoding {
    static func write(_ overrides: [Override], to json: inout JSONWriter) {
        json.beginArray()
        for override in overrides {
            json.beginObject()
            json.field("rule", override.rule)
            if let model = override.model { json.field("model", model) }
            if let requests = override.requests { json.field("requests", requests) }
            if let tokens = override.tokens { json.field("tokens", tokens) }
            if let concurrency = override.concurrency { json.field("concurrency", concurrency) }
            json.endObject()
        }
        json.endArray()
    }

    static func encode(_ overrides: [Override]) -> String {
        var json = JSONWriter()
        write(overrides, to: &json)
        return json.text
    }

    /// Reads what `encode` wrote; nil when it is not that shape.
    static func decode(_ text: String) -> [Override]? {
        guard let value = try? JSONParser.parse(Array(text.utf8)) else { return nil }
        return try? parse(value, field: "overrides")
    }

    /// Reads overrides from a request, naming the offending field in its error.
    static func parse(_ value: JSONValue, field: String) throws(APIError) -> [Override] {
        guard case .array(let elements) = value else {
            throw .badRequest(field: field, "must be an array of {\"rule\", \"model\"?, \"requests\"?, \"tokens\"?, \"concurrency\"?}")
        }
        var overrides: [Override] = []
        for (index, element) in elements.enumerated() {
            let path = "\(field)[\(index)]"
            guard case .object = element else { throw .badRequest(field: path, "must be an object") }
            guard case .string(let rule)? = element["rule"], !rule.isEmpty else {
                throw .badRequest(field: "\(path).rule", "must name a rule of the catalogue")
            }
            var override = Override(rule: rule)
            switch element["model"] {
            case nil, .null?: break
            case .string(let model)?: override.model = model
            case let other?: throw .badRequest(field: "\(path).model", "must be a string, got \(other.kind)")
            }
            for dimension in ["requests", "tokens", "concurrency"] {
                guard let figure = element[dimension], figure != .null else { continue }
                guard let value = figure.nonNegativeInteger, value > 0 else {
                    throw .badRequest(field: "\(path).\(dimension)", "must be a positive integer, got \(figure.kind)")
                }
                switch dimension {
                case "requests": override.requests = value
                case "tokens": override.tokens = value
                default: override.concurrency = value
                }
            }
            overrides.append(override)
        }
        return overrides
    }
}
