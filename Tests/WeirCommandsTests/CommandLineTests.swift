import Foundation
import Testing
import WeirPolicy
import WeirRedisTesting

/// The `weir` binary itself, run as a user would: exit codes, standard output and error.
@Suite("weir command line")
struct CommandLineTests {
    struct Run {
        var status: Int32
        var output: String
        var error: String
    }

    /// The `weir` executable built next to the test bundle.
    static let binary: URL = {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        // The test runner is `.build/<config>/<Package>PackageTests.xctest` (a file on Linux).
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("weir").path),
              directory.path != "/" {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("weir")
    }()

    func weir(_ arguments: String...) throws -> Run {
        let run = try ChildProcess.run(Self.binary.path, arguments)
        return Run(status: run.status, output: run.output, error: run.error)
    }

    func temporaryFile(_ contents: String, suffix: String = ".yaml") throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("weir-test-\(UUID().uuidString)\(suffix)").path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("the binary is built")
    func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary.path), "no weir at \(Self.binary.path)")
    }

    @Test("`weir catalogue` prints YAML that `weir check-config` accepts and that equals the built-in catalogue")
    func catalogueRoundTrip() throws {
        let printed = try weir("catalogue")
        #expect(printed.status == 0)
        #expect(try Catalogue.parse(yaml: printed.output, source: "stdout") == Catalogue.builtIn)
        let file = try temporaryFile(printed.output)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let checked = try weir("check-config", file)
        #expect(checked.status == 0)
        #expect(checked.output.contains("valid"))
        #expect(checked.error.isEmpty)
    }

    @Test("`weir check-config` exits 1 and lists every problem with its line and key path")
    func checkConfigErrors() throws {
        let file = try temporaryFile("""
            tiers:
              - name: free
                recharge_threshold: 0
            rules:
              - name: chat
                api: text
                limits:
                  gold: { requests: -5 }
            extra: 1

            """)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let run = try weir("check-config", file)
        #expect(run.status == 1)
        #expect(run.error.contains("\(file):8: rules[0].limits.gold"))
        #expect(run.error.contains("\(file):8: rules[0].limits.gold.requests: must be a positive integer, got -5"))
        #expect(run.error.contains("\(file):9: extra: unknown key `extra`"))
        #expect(!run.error.contains("Fatal error"))
        #expect(!run.error.contains("Stack dump"))
    }

    @Test("`weir check-config` on a missing, empty or binary file fails cleanly", arguments: ["missing", "empty", "binary"])
    func checkConfigUnreadable(kind: String) throws {
        let path: String
        switch kind {
        case "missing": path = "/nonexistent/weir.yaml"
        case "empty": path = try temporaryFile("")
        default: path = try temporaryFile(String(decoding: [0xFF, 0x00, 0xFE, 0x41], as: UTF8.self))
        }
        let run = try weir("check-config", path)
        #expect(run.status == 1)
        #expect(run.error.contains(path))
        #expect(!run.error.contains("Fatal error"))
    }

    @Test("`weir simulate` prints the decisions; a bad trace exits 1 naming its line")
    func simulate() throws {
        let trace = try temporaryFile(
            "time_ms,account,api,model,units\n" + (0..<21).map { "\($0),a,voice-design,,0" }.joined(separator: "\n") + "\n",
            suffix: ".csv")
        defer { try? FileManager.default.removeItem(atPath: trace) }
        let config = try temporaryFile(Catalogue.builtIn.yaml())
        defer { try? FileManager.default.removeItem(atPath: config) }
        let run = try weir("simulate", "--config", config, "--trace", trace)
        #expect(run.status == 0)
        let lines = run.output.split(separator: "\n")
        #expect(lines.count == 22)
        #expect(lines[20] == "19,a,voice-design,,0,true,,")
        #expect(lines[21] == "20,a,voice-design,,0,false,requests,59980")

        let bad = try temporaryFile("time_ms,account,api,model,units\n0,a,text,MiniMax-M2,x\n", suffix: ".csv")
        defer { try? FileManager.default.removeItem(atPath: bad) }
        let refused = try weir("simulate", "--config", config, "--trace", bad)
        #expect(refused.status == 1)
        #expect(refused.error.contains("line 2: `units` must be a non-negative integer, got `x`"))
    }

    @Test("`weir --help` lists the subcommands")
    func help() throws {
        let run = try weir("--help")
        #expect(run.status == 0)
        for command in ["catalogue", "check-config", "simulate"] {
            #expect(run.output.contains(command))
        }
    }
}
