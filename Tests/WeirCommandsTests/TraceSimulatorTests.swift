import Testing
import WeirCore
import WeirPolicy

@testable import WeirCommands

@Suite("weir simulate")
struct TraceSimulatorTests {
    let simulator = TraceSimulator(catalogue: .builtIn)

    /// Runs `rows` (after the standard header) and returns the output rows, header dropped.
    func simulate(_ rows: [String], header: String = "time_ms,account,api,model,units,duration_ms") throws -> [String] {
        let output = try simulator.run(trace: ([header] + rows).joined(separator: "\n") + "\n")
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == header + ",allowed,reason,retry_after_ms")
        #expect(lines.last == "")
        return Array(lines.dropFirst().dropLast())
    }

    @Test("the free tier's 21st MiniMax-M2 request in a minute is refused with the exact wait")
    func twentyFirstRequest() throws {
        var rows = (0..<20).map { "\($0 * 100),alice,text,MiniMax-M2,10," }
        rows.append("2000,alice,text,MiniMax-M2,10,")
        rows.append("59999,alice,text,MiniMax-M2,10,")  // 1 ms before the first call leaves
        rows.append("60000,alice,text,MiniMax-M2,10,")  // exactly when it leaves
        let out = try simulate(rows)
        #expect(out[0...19].allSatisfy { $0.hasSuffix(",true,,") })
        #expect(out[20] == "2000,alice,text,MiniMax-M2,10,,false,requests,58000")
        #expect(out[21] == "59999,alice,text,MiniMax-M2,10,,false,requests,1")
        #expect(out[22] == "60000,alice,text,MiniMax-M2,10,,true,,")
    }

    @Test("max_wait_ms: a call waits for room and is admitted at its exact retry time; waited_ms says how long; a short bound is refused at once")
    func waits() throws {
        let header = "time_ms,account,api,model,units,duration_ms,max_wait_ms"
        let output = try simulator.run(trace: ([header] + (0..<20).map { "\($0 * 100),carol,text,MiniMax-M2,10,," } + [
            "2000,carol,text,MiniMax-M2,10,,60000",  // room at 60,000 ms: waits 58,000 ms
            "2001,carol,text,MiniMax-M2,10,,1000",  // queues behind; its bound comes first
            "2002,carol,text,MiniMax-M2,10,,",  // does not wait
            "70000,carol,text,MiniMax-M2,10,,0",
        ]).joined(separator: "\n") + "\n")
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.first == header + ",allowed,reason,retry_after_ms,waited_ms")
        #expect(lines[1] == "0,carol,text,MiniMax-M2,10,,,true,,,0")
        #expect(lines[21] == "2000,carol,text,MiniMax-M2,10,,60000,true,,,58000")
        #expect(lines[22] == "2001,carol,text,MiniMax-M2,10,,1000,false,requests,57999,0")
        #expect(lines[23] == "2002,carol,text,MiniMax-M2,10,,,false,requests,57998,0")
        #expect(lines[24] == "70000,carol,text,MiniMax-M2,10,,0,true,,,0")
    }

    @Test("a rule's max_wait is replayed without the column; the column's 0 says not to wait")
    func ruleWait() throws {
        let catalogue = try Catalogue.parse(yaml: """
            tiers:
              - name: free
                recharge_threshold: 0
            rules:
              - name: chat
                api: text
                models: [MiniMax-M2]
                max_wait: 90s
                limits:
                  all: {requests: 1}
            """, source: "wait.yaml")
        let simulator = TraceSimulator(catalogue: catalogue)
        let plain = try simulator.run(trace: "time_ms,account,api,model,units\n0,e,text,MiniMax-M2,0\n10,e,text,MiniMax-M2,0\n")
        #expect(plain == "time_ms,account,api,model,units,allowed,reason,retry_after_ms,waited_ms\n0,e,text,MiniMax-M2,0,true,,,0\n10,e,text,MiniMax-M2,0,true,,,59990\n")
        let told = try simulator.run(trace: "time_ms,account,api,model,units,max_wait_ms\n0,e,text,MiniMax-M2,0,\n10,e,text,MiniMax-M2,0,0\n")
        #expect(told.hasSuffix("10,e,text,MiniMax-M2,0,0,false,requests,59990,0\n"))
    }

    @Test("a call admitted after waiting holds its slot from then: a music call waits for a slot that a lease's end frees")
    func waitsForSlot() throws {
        let header = "time_ms,account,api,model,units,duration_ms,max_wait_ms"
        var rows = (0..<20).map { "\($0),dave,music-generation,Music-2.0,0,10000," }
        rows.append("100,dave,music-generation,Music-2.0,0,5000,30000")  // a slot frees at 10,000
        rows.append("100,dave,music-generation,Music-2.0,0,5000,5000")  // its bound comes first
        let output = try simulator.run(trace: ([header] + rows).joined(separator: "\n") + "\n")
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines[21].hasSuffix(",true,,,9900"), "\(lines[21])")
        #expect(lines[22].hasSuffix(",false,concurrency,,5000"), "\(lines[22])")
    }

    @Test("too_large is checked before anything else and has no retry time")
    func tooLarge() throws {
        var rows = (0..<20).map { "\($0),bob,text,MiniMax-M2,0," }
        rows.append("30,bob,text,MiniMax-M2,1000001,")
        rows.append("31,bob,text,MiniMax-M2,1000000,")
        let out = try simulate(rows)
        #expect(out[20] == "30,bob,text,MiniMax-M2,1000001,,false,too_large,")
        #expect(out[21] == "31,bob,text,MiniMax-M2,1000000,,false,requests,59969")
    }

    @Test("tokens deny alone; when requests and tokens both deny, reason is requests and the wait the longer")
    func tokensAndBoth() throws {
        let out = try simulate([
            "0,carol,text,MiniMax-M2,600000,",
            "1000,carol,text,MiniMax-M2,600000,",   // tokens: fits when the first leaves at 60000
        ] + (2...19).map { "\(1000 + $0),carol,text,MiniMax-M2,1," } + [
            "5000,carol,text,MiniMax-M2,1,",      // the 20th call: fits
            "6000,carol,text,MiniMax-M2,500000,", // requests (until 60000) and tokens (until 60000)
            "7000,carol,text,MiniMax-M2,1,",
        ])
        #expect(out[1] == "1000,carol,text,MiniMax-M2,600000,,false,tokens,59000")
        #expect(out[20] == "5000,carol,text,MiniMax-M2,1,,true,,")
        #expect(out[21] == "6000,carol,text,MiniMax-M2,500000,,false,requests,54000")
        #expect(out[22] == "7000,carol,text,MiniMax-M2,1,,false,requests,53000")
    }

    @Test("music holds a slot for duration_ms; the 21st concurrent call waits, with no retry time")
    func concurrency() throws {
        var rows = (0..<20).map { "1000,dave,music-generation,Music-2.0,0,\(10_000 + $0)" }
        rows.append("1000,dave,music-generation,Music-2.0,0,5000")  // 21st while 20 run
        rows.append("1000,dave,music-generation,Music-2.0,0,")      // no duration: holds no slot
        rows.append("10999,dave,music-generation,Music-2.0,0,100")  // the first ends at 11000
        rows.append("11000,dave,music-generation,Music-2.0,0,100")  // released before this call
        let out = try simulate(rows)
        #expect(out[0...19].allSatisfy { $0.hasSuffix(",true,,") })
        #expect(out[20] == "1000,dave,music-generation,Music-2.0,0,5000,false,concurrency,")
        #expect(out[21] == "1000,dave,music-generation,Music-2.0,0,,true,,")
        #expect(out[22] == "10999,dave,music-generation,Music-2.0,0,100,false,concurrency,")
        #expect(out[23] == "11000,dave,music-generation,Music-2.0,0,100,true,,")
    }

    @Test("rules without models match any model, the empty one included")
    func anyModel() throws {
        let out = try simulate([
            "0,erin,voice-cloning,,0,",
            "0,erin,voice-design,whatever,0,",
        ])
        #expect(out == ["0,erin,voice-cloning,,0,,true,,", "0,erin,voice-design,whatever,0,,true,,"])
    }

    @Test("accounts from the config keep their tier; unknown accounts are in the lowest tier")
    func tiers() throws {
        var catalogue = Catalogue.builtIn
        catalogue.accounts = [AccountProfile(id: "payer", recharges: 10)]
        let simulator = TraceSimulator(catalogue: catalogue)
        let rows = (0..<21).flatMap { index in
            ["\(index),payer,text,MiniMax-M2-Stable,1", "\(index),stranger,text,MiniMax-M2-Stable,1"]
        }
        let output = try simulator.run(trace: (["time_ms,account,api,model,units"] + rows).joined(separator: "\n"))
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.last == "20,stranger,text,MiniMax-M2-Stable,1,false,requests,59980")
        #expect(lines[lines.count - 2] == "20,payer,text,MiniMax-M2-Stable,1,true,,")
    }

    @Test("columns may come in any order, extra columns are carried through, fields are quoted when needed")
    func columns() throws {
        let out = try simulate(
            ["\"a,b\",0,voice-design,,7,x"],
            header: "account,time_ms,api,model,units,note")
        #expect(out == ["\"a,b\",0,voice-design,,7,x,true,,"])
    }

    @Test("bad traces are refused with the line and the reason", arguments: [
        ("time_ms,account,api,units\n", "line 1: the header lacks `model`; expected time_ms,account,api,model,units[,duration_ms]"),
        ("time_ms,account,api,model,units\n0,a,text,MiniMax-M2,-5\n", "line 2: `units` must be a non-negative integer, got `-5`"),
        ("time_ms,account,api,model,units\n0,a,text,MiniMax-M2,1.5\n", "line 2: `units` must be a non-negative integer, got `1.5`"),
        ("time_ms,account,api,model,units\n0,a,text,MiniMax-M2,99999999999999999999\n", "line 2: `units` must be a non-negative integer, got `99999999999999999999`"),
        ("time_ms,account,api,model,units\n5,a,text,MiniMax-M2,1\n4,a,text,MiniMax-M2,1\n", "line 3: rows must be in time order: 4 comes after 5"),
        ("time_ms,account,api,model,units\n0,a,text,MiniMax-M2\n", "line 2: 4 fields where the header has 5"),
        ("time_ms,account,api,model,units\n0,a,\"text,MiniMax-M2,1\n", "line 2: a quoted field is never closed"),
        ("", "line 1: the file is empty: expected a header row"),
    ])
    func badTraces(trace: String, message: String) {
        #expect(throws: TraceSimulator.TraceError.self) { try simulator.run(trace: trace) }
        do {
            _ = try simulator.run(trace: trace)
        } catch {
            #expect(error.description == message)
        }
    }

    @Test("an unknown model names its line")
    func unknownModel() {
        do {
            _ = try simulator.run(trace: "time_ms,account,api,model,units\n0,a,text,GPT-9,1\n")
            Issue.record("an unknown model was simulated")
        } catch {
            #expect(error.line == 2)
            #expect(error.description.contains("GPT-9"))
        }
    }
}
