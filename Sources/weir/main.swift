import ArgumentParser
import WeirCommands

// The asynchronous entry point, spelled out: `weir serve` runs a server. (A bare
// `WeirCommand.main()` from top-level code resolves to ParsableCommand's synchronous
// overload, which refuses an asynchronous root.)
do {
    var command = try await WeirCommand.asyncParseAsRoot()
    if var asynchronous = command as? AsyncParsableCommand {
        try await asynchronous.run()
    } else {
        try command.run()
    }
} catch {
    WeirCommand.exit(withError: error)
}
