import ArgumentParser
import WeirPolicy

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `weir simulate --config FILE --trace FILE`: replays a trace and prints each decision.
public struct SimulateCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Replay a CSV trace of calls against a catalogue and print every decision.",
        discussion: """
            The trace is CSV with the header time_ms,account,api,model,units and an optional \
            duration_ms column (the call holds a concurrency lease that long, then settles with \
            the same units). Rows must be in time order. The output, on standard output, is the \
            input plus the columns allowed (true/false), reason (requests, tokens, concurrency \
            or too_large; empty when allowed) and retry_after_ms (the exact wait, rounded up; \
            empty when allowed, too large, or only concurrency denies). Accounts not in the \
            catalogue are in the lowest tier.
            """
    )

    @Option(help: "The catalogue (YAML). Defaults to the built-in catalogue.")
    var config: String?

    @Option(help: "The trace (CSV).")
    var trace: String

    public init() {}

    public func run() throws {
        let catalogue: Catalogue
        if let config {
            do {
                catalogue = try Catalogue.load(contentsOf: config)
            } catch {
                printToStandardError(error.description)
                throw ExitCode.failure
            }
        } else {
            catalogue = .builtIn
        }
        guard let text = readText(trace) else {
            printToStandardError("\(trace): cannot read the trace file")
            throw ExitCode.failure
        }
        do {
            print(try TraceSimulator(catalogue: catalogue).run(trace: text), terminator: "")
        } catch {
            printToStandardError("\(trace): \(error.description)")
            throw ExitCode.failure
        }
    }

    private func readText(_ path: String) -> String? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count > 0 { bytes.append(contentsOf: buffer[0..<count]) }
            if count < buffer.count { break }
        }
        if ferror(file) != 0 { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
