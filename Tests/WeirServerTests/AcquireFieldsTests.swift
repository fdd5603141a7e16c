import Foundation
import Testing
import WeirConformance
@testable import WeirServer

@Suite("The flat acquire scanner agrees with the JSON parser")
struct AcquireFieldsTests {
    static let bodies: [String] = [
        #"{"account":"a","api":"text","model":"MiniMax-M2","units":100,"lease_ttl_ms":60000}"#,
        #" { "api_key" : "weir_x_y" , "api":"t2a", "model":"speech-02-hd", "units": 0 } "#,
        #"{"account":"a","account":"b","api":"text","model":"m"}"#,
        #"{"account":"é","api":"text","model":"m","extra":true,"other":null,"n":-1.5e3}"#,
        #"{"account":"a\"b","api":"text","model":"m"}"#,
        #"{"account":"a","api":"text","model":"m","nested":{"x":1}}"#,
        #"{"account":"a","api":"text","model":"m",}"#,
        #"{"units":01}"#, #"{"units":1.}"#, #"{"units":-}"#, #"{}"#, #"{"#, "", "[]", "null",
        #"{"account":"a"} trailing"#, #"{"account" "a"}"#, #"{"a":tru}"#,
    ]

    @Test("fixed bodies")
    func fixed() throws {
        for body in Self.bodies {
            try check(Array(body.utf8))
        }
    }

    @Test("20,000 mutated bodies (seeded)")
    func mutated() throws {
        var generator = SeededGenerator(seed: 0x5EED)
        let base = Self.bodies.map { Array($0.utf8) }.filter { !$0.isEmpty }
        let alphabet = Array(#"{}[]":,.-+eE0123456789 \tabcnrtuxl"#.utf8) + [0xC3, 0xA9, 0xFF, 0x5C]
        for _ in 0..<20_000 {
            var body = base[Int.random(in: 0..<base.count, using: &generator)]
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let position = Int.random(in: 0...body.count, using: &generator)
                let operation = Int.random(in: 0..<3, using: &generator)
                if operation == 0 || position == body.count {
                    body.insert(alphabet.randomElement(using: &generator)!, at: position)
                } else if operation == 1 {
                    body.remove(at: position)
                } else {
                    body[position] = alphabet.randomElement(using: &generator)!
                }
            }
            try check(body)
        }
    }

    /// When the scanner accepts a body, the parser accepts it too, with the same fields.
    private func check(_ body: [UInt8]) throws {
        guard let scanned = AcquireFields.scanFlat(body) else { return }
        let parsed = try JSONParser.parse(body)
        guard case .object = parsed else {
            Issue.record("scanner accepted a non-object: \(String(decoding: body, as: UTF8.self))")
            return
        }
        #expect(scanned == AcquireFields(parsed), "\(String(decoding: body, as: UTF8.self))")
    }
}
