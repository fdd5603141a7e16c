import ArgumentParser
import WeirPolicy

/// `weir catalogue`: prints the built-in catalogue as YAML.
public struct CatalogueCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "catalogue",
        abstract: "Print the built-in catalogue as YAML.",
        discussion: """
            The output is a complete configuration file that `weir check-config` accepts: \
            copy it, edit tiers, rules and accounts, and pass it to `weir serve --config` \
            or `weir simulate --config`.
            """
    )

    public init() {}

    public func run() {
        print(Catalogue.builtIn.yaml(), terminator: "")
    }
}
