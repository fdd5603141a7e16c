import WeirCommands

await WeirCommand.main()
