import WeirCommands

// The asynchronous entry point (`weir serve` runs a server). Called from an async
// function: from top-level code, `main(nil)` resolves to ParsableCommand's synchronous
// overload, which runs a subcommand's synchronous `run()` (for `serve`: the help text).
func weirMain() async {
    await WeirCommand.main(nil)
}

await weirMain()
