/// The `grpc-timeout` request header: how long the caller waits for the answer.
///
/// Its value is 1 to 8 ASCII digits followed by a unit: `H` hours, `M` minutes,
/// `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds (gRPC over HTTP/2,
/// "Requests"). Anything else does not parse.
enum GRPCTimeout {
    /// The timeout `value` states, in nanoseconds (saturating at `UInt64.max`), or nil
    /// when it is not a valid `grpc-timeout`.
    static func nanoseconds(_ value: String) -> UInt64? {
        let utf8 = value.utf8
        guard utf8.count >= 2, utf8.count <= 9, let unit = utf8.last else { return nil }
        var amount: UInt64 = 0
        for byte in utf8.dropLast() {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            amount = amount * 10 + UInt64(byte - UInt8(ascii: "0"))
        }
        let scale: UInt64
        switch unit {
        case UInt8(ascii: "H"): scale = 3_600_000_000_000
        case UInt8(ascii: "M"): scale = 60_000_000_000
        case UInt8(ascii: "S"): scale = 1_000_000_000
        case UInt8(ascii: "m"): scale = 1_000_000
        case UInt8(ascii: "u"): scale = 1_000
        case UInt8(ascii: "n"): scale = 1
        default: return nil
        }
        let (product, overflow) = amount.multipliedReportingOverflow(by: scale)
        return overflow ? UInt64.max : product
    }
}
