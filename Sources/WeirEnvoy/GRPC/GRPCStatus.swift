/// A gRPC status: the code and message a call ends with, sent as the `grpc-status` and
/// `grpc-message` trailers.
///
/// Value type; `Sendable`.
public struct GRPCStatus: Error, Sendable, Hashable, CustomStringConvertible {
    /// gRPC's status codes (`grpc/doc/statuscodes.md`), by their wire value.
    public enum Code: UInt8, Sendable, Hashable {
        case ok = 0
        case cancelled = 1
        case unknown = 2
        case invalidArgument = 3
        case deadlineExceeded = 4
        case notFound = 5
        case alreadyExists = 6
        case permissionDenied = 7
        case resourceExhausted = 8
        case failedPrecondition = 9
        case aborted = 10
        case outOfRange = 11
        case unimplemented = 12
        case `internal` = 13
        case unavailable = 14
        case dataLoss = 15
        case unauthenticated = 16
    }

    public var code: Code
    /// Said to the caller in `grpc-message` (percent-encoded there); empty for none.
    public var message: String
    /// The message encodings the server takes, sent as `grpc-accept-encoding` with a
    /// status that refuses the caller's (gRPC's compression rules); nil for none.
    var acceptEncoding: String?

    public init(_ code: Code, _ message: String = "") {
        self.code = code
        self.message = message
    }

    public var description: String { message.isEmpty ? "\(code)" : "\(code): \(message)" }

    /// `message` as `grpc-message` carries it: UTF-8, with every byte outside printable
    /// ASCII (0x20-0x7E) and `%` itself written `%XX` (gRPC over HTTP/2, "Responses").
    var encodedMessage: String {
        var encoded = [UInt8]()
        encoded.reserveCapacity(message.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                encoded.append(byte)
            } else {
                encoded.append(UInt8(ascii: "%"))
                encoded.append(hex[Int(byte >> 4)])
                encoded.append(hex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: encoded, as: UTF8.self)
    }
}
