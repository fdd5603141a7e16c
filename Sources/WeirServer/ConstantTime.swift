/// Comparisons whose duration does not depend on where the inputs differ.
enum ConstantTime {
    /// Whether `a` and `b` hold the same bytes. Runs over every byte of the longer
    /// input whatever the contents; only the lengths can show in its timing.
    static func equals(_ a: String, _ b: String) -> Bool {
        equals(Array(a.utf8), Array(b.utf8))
    }

    static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        let count = max(a.count, b.count)
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count) | (a.count == b.count ? 0 : 1)
        for index in 0..<count {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0
    }
}
