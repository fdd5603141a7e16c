import Foundation
import Yams

/// Turns the errors of the YAML parser (Yams/libyaml) into one `ConfigError` with a
/// line and a message that says the file is not valid YAML.
enum YAMLSyntaxError {
    static func configError(_ error: any Error, yaml: String) -> ConfigError {
        guard let error = error as? YamlError else {
            return ConfigError(path: "", line: nil, message: "not valid YAML: \(error)")
        }
        switch error {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            if problem == "but found another document" {
                return ConfigError(path: "", line: mark.line, message: "not valid YAML for a catalogue: a second document starts here; a catalogue is one document")
            }
            var message = "not valid YAML: \(problem) at column \(mark.column)"
            if let context {
                let start = context.mark.line != mark.line ? " that starts on line \(context.mark.line)" : ""
                message += " (\(context.text)\(start))"
            }
            return ConfigError(path: "", line: mark.line, message: message)
        case .reader(let problem, let offset, let value, _):
            let line = offset.map { offset in 1 + yaml.prefix(offset).reduce(0) { $1.isNewline ? $0 + 1 : $0 } }
            let character = value >= 0 ? String(format: " (character U+%04X)", value) : ""
            return ConfigError(path: "", line: line, message: "not valid YAML: \(problem)\(character)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map { "`\(ScalarSyntax.shown($0))`" }.joined(separator: ", ")
            return ConfigError(path: "", line: context.mark.line, message: "not valid YAML: key \(keys), first on this line, appears again in the same mapping; each key may appear only once")
        default:
            return ConfigError(path: "", line: nil, message: "not valid YAML: \(error)")
        }
    }
}
