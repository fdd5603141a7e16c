import ArgumentParser

/// The `weir` command line: one root command, a subcommand per shape of work.
public struct WeirCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "weir",
        abstract: "Weir: rate limits for AI model APIs (requests, tokens and concurrency per account and model).",
        discussion: """
            Weir enforces per-account, per-model limits: requests per minute, tokens per \
            minute and concurrent calls, with free and paid tiers, upgrades on recharge \
            and per-account overrides.
            """,
        subcommands: [
            CatalogueCommand.self,
            CheckConfigCommand.self,
            SimulateCommand.self,
            ServeCommand.self,
            MockUpstreamCommand.self,
        ]
    )

    public init() {}
}
