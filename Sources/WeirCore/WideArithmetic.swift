/// Exact `a * b / c` on `UInt64` through a 128-bit intermediate, saturating at
/// `UInt64.max`. The algorithms use these so that rates that do not divide their
/// window (7 per minute) stay exact, with no floating point anywhere.
@usableFromInline
enum WideArithmetic {
    /// `floor(a * b / c)`, saturating. `c` must not be zero.
    @inlinable
    static func multiplyDivideFloor(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64 {
        let product = a.multipliedFullWidth(by: b)
        if product.high == 0 { return product.low / c }  // the common case: a 64-bit divide
        if product.high >= c { return .max }
        return c.dividingFullWidth(product).quotient
    }

    /// `ceil(a * b / c)`, saturating. `c` must not be zero.
    @inlinable
    static func multiplyDivideCeiling(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64 {
        let product = a.multipliedFullWidth(by: b)
        if product.high == 0 {
            let (quotient, remainder) = product.low.quotientAndRemainder(dividingBy: c)
            return remainder == 0 ? quotient : quotient + 1
        }
        if product.high >= c { return .max }
        let (quotient, remainder) = c.dividingFullWidth(product)
        return remainder == 0 ? quotient : (quotient == .max ? .max : quotient + 1)
    }

    /// Compares `a * b` with `c * d` exactly: true when `a * b <= c * d`.
    @inlinable
    static func productIsAtMost(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) -> Bool {
        let left = a.multipliedFullWidth(by: b)
        let right = c.multipliedFullWidth(by: d)
        return left.high < right.high || (left.high == right.high && left.low <= right.low)
    }
}

extension UInt64 {
    /// `self + other`, saturating at `UInt64.max`.
    @inlinable
    public func addingSaturating(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }

    /// `self - other`, or zero when `other` is larger.
    @inlinable
    public func subtractingSaturating(_ other: UInt64) -> UInt64 {
        self > other ? self - other : 0
    }
}
