import ArgumentParser
import WeirPolicy

/// `weir check-config FILE`: validates a catalogue file.
public struct CheckConfigCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a catalogue file and list every problem in it.",
        discussion: """
            Exits 0 when the file is valid (and prints a one-line summary), 1 when it is not: \
            every problem is printed to standard error as FILE:LINE: KEY.PATH: MESSAGE.
            """
    )

    @Argument(help: "The YAML catalogue to check.")
    var file: String

    public init() {}

    public func run() throws {
        do {
            let catalogue = try Catalogue.load(contentsOf: file)
            print("\(file): valid: \(catalogue.tiers.count) tiers, \(catalogue.rules.count) rules, \(catalogue.accounts.count) accounts")
        } catch {
            printToStandardError(error.description)
            printToStandardError("\(file): \(error.errors.count) problem\(error.errors.count == 1 ? "" : "s")")
            throw ExitCode.failure
        }
    }
}
