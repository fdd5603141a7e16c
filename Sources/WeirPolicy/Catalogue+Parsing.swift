import Foundation
import Yams

extension Catalogue {
    /// Reads and validates a catalogue from YAML text.
    ///
    /// Every problem is reported at once, each with its key path
    /// (`rules[2].limits.free.requests`) and line, ordered by line.
    ///
    /// - Parameters:
    ///   - yaml: the text of the file.
    ///   - source: the file's name, as messages should show it.
    /// - Throws: `ConfigErrors` holding at least one `ConfigError`. Never traps, on any input.
    public static func parse(yaml: String, source: String) throws(ConfigErrors) -> Catalogue {
        func fail(_ errors: [ConfigError]) -> ConfigErrors {
            // Problems with the whole file first, then by line; stable within a line.
            let ordered = errors.enumerated().sorted { a, b in
                let lineA = a.element.line ?? 0, lineB = b.element.line ?? 0
                return lineA != lineB ? lineA < lineB : a.offset < b.offset
            }
            return ConfigErrors(source: source, errors: ordered.map(\.element))
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw fail([YAMLSyntaxError.configError(error, yaml: yaml)])
        }
        guard let root, !root.isNull else {
            throw fail([ConfigError(path: "", line: nil, message: "the file is empty: expected a mapping with `tiers` and `rules`")])
        }
        // Without aliases a file cannot hold more values than bytes, so this budget
        // refuses only files that aliases make expand beyond their size.
        var reader = CatalogueReader(budget: max(100_000, yaml.utf8.count))
        guard let catalogue = reader.read(root) else {
            throw fail(reader.errors)
        }
        return catalogue
    }

    /// Reads and validates the catalogue in the file at `path`; see `parse(yaml:source:)`.
    ///
    /// - Throws: `ConfigErrors` with `source == path`; a file that cannot be read or is
    ///   not UTF-8 is one `ConfigError` without a line.
    public static func load(contentsOf path: String) throws(ConfigErrors) -> Catalogue {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? error.localizedDescription
            throw ConfigErrors(source: path, errors: [ConfigError(path: "", line: nil, message: "cannot read the file: \(reason)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigErrors(source: path, errors: [ConfigError(path: "", line: nil, message: "the file is not valid UTF-8 text")])
        }
        return try parse(yaml: text, source: path)
    }
}
