/// Comparisons whose duration does not depend on where the inputs differ.
enum ConstantTime {
    /// Whether `a` and `b` hold the same bytes. Runs over every byte of the longer
    /// input whatever the contents; only the lengths can show in its timing.
    static func equals(_ a: String, _ b: String) -> Bool {
        // In place when both strings are contiguous UTF-8 (native strings are), else copied.
        let inPlace = a.utf8.withContiguousStorageIfAvailable { a in
            b.utf8.withContiguousStorageIfAvailable { b in equals(a, b) }
        }
        return (inPlace ?? nil) ?? equals(Array(a.utf8), Array(b.utf8))
    }

    static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in equals(a, b) } }
    }

    static func equals(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
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
