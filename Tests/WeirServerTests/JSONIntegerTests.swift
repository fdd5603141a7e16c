import Testing
@testable import WeirServer

@Suite("JSON numbers read as counts: exactly the numbers whose value is a non-negative integer")
struct JSONIntegerTests {
    static let counts: [(String, UInt64)] = [
        ("0", 0), ("-0", 0), ("0.0", 0), ("-0.0e5", 0), ("0e-400", 0),
        ("1200", 1200), ("1200.0", 1200), ("1.2e3", 1200), ("1.2E+3", 1200), ("12000e-1", 1200), ("120000.00e-2", 1200),
        ("999999999999999.0", 999_999_999_999_999),
        ("18446744073709551615", .max), ("1.8446744073709551615e19", .max), ("18446744073709551615.000", .max),
        ("0000000000000000000000001", 1),
    ]

    @Test("integral values, in any notation", arguments: counts)
    func integral(_ text: String, _ value: UInt64) {
        #expect(JSONValue.number(text).integerReading == .count(value))
    }

    @Test("fractions and negatives are not counts", arguments: ["1.5", "1e-1", "-1", "-1.0", "-1e0", "12001e-1", "1.", ".5", "e5", "1e", "1e+", "--1", "1x"])
    func notCounts(_ text: String) {
        #expect(JSONValue.number(text).integerReading == .notCount)
    }

    @Test("above 2^64 - 1 is too large, however written", arguments: ["18446744073709551616", "1.8446744073709551616e19", "1e20", "1e10000", "99999999999999999999999.0"])
    func tooLarge(_ text: String) {
        #expect(JSONValue.number(text).integerReading == .tooLarge)
    }

    @Test("the value agrees with a decimal reading on random mantissas and exponents")
    func randomAgreement() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let mantissa = UInt64.random(in: 0...999_999, using: &generator)
            let shift = Int.random(in: 0...6, using: &generator)
            let exponent = Int.random(in: -3...10, using: &generator)
            // mantissa / 10^shift * 10^exponent, written with a fraction part.
            var digits = String(mantissa)
            while digits.count <= shift { digits = "0" + digits }
            let text = String(digits.dropLast(shift)) + (shift > 0 ? "." + digits.suffix(shift) : "") + "e\(exponent)"
            let scale = exponent - shift
            var expected: JSONValue.IntegerReading
            if mantissa == 0 {
                expected = .count(0)
            } else if scale >= 0 {
                var value: UInt64? = mantissa
                for _ in 0..<scale { value = value.flatMap { let (v, o) = $0.multipliedReportingOverflow(by: 10); return o ? nil : v } }
                expected = value.map { .count($0) } ?? .tooLarge
            } else {
                var power: UInt64 = 1
                for _ in 0..<(-scale) { power *= 10 }
                expected = mantissa % power == 0 ? .count(mantissa / power) : .notCount
            }
            #expect(JSONValue.number(text).integerReading == expected, "\(text)")
        }
    }
}
