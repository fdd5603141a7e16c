/// One problem in a catalogue file: where it is and what is wrong.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The key path of the offending value, e.g. `rules[2].limits.free.requests`;
    /// empty for a problem with the whole file (not valid YAML, empty).
    public var path: String
    /// The 1-based line the problem is on, when known.
    public var line: Int?
    /// What is wrong, and what would be right.
    public var message: String

    public init(path: String, line: Int?, message: String) {
        self.path = path
        self.line = line
        self.message = message
    }

    /// `rules[2].limits.free.requests (line 14): must be a positive integer, got -5`.
    public var description: String {
        switch (path.isEmpty, line) {
        case (false, let line?): "\(path) (line \(line)): \(message)"
        case (false, nil): "\(path): \(message)"
        case (true, let line?): "line \(line): \(message)"
        case (true, nil): message
        }
    }
}
