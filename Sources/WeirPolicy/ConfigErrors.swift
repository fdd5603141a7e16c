/// Every problem found in one catalogue file. Loading reports all of them at once,
/// ordered by line, so one edit can fix them all.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file the problems are in, as named to `Catalogue.parse(yaml:source:)` or
    /// `Catalogue.load(contentsOf:)`.
    public var source: String
    /// The problems, ordered by line (problems with the whole file first). Never empty
    /// when thrown.
    public var errors: [ConfigError]

    public init(source: String, errors: [ConfigError]) {
        self.source = source
        self.errors = errors
    }

    /// One line per problem, `<source>:<line>: <path>: <message>`, the way compilers
    /// report them (the line and the path are left out when unknown or empty).
    public var description: String {
        errors.map { error in
            var location = source
            if let line = error.line { location += ":\(line)" }
            return error.path.isEmpty
                ? "\(location): \(error.message)"
                : "\(location): \(error.path): \(error.message)"
        }.joined(separator: "\n")
    }
}
