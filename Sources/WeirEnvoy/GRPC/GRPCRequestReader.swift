import NIOCore

/// The request message of one unary gRPC call, read from the DATA frames of its stream.
///
/// On the wire each message is a 1-byte compressed flag, a 4-byte big-endian length, and
/// that many bytes (gRPC over HTTP/2, "Length-Prefixed-Message"). A unary call sends
/// exactly one. The reader keeps at most one message's bytes: a length over
/// `maxMessageBytes` is refused as soon as its prefix is read, before its bytes are.
///
/// Value type; used on one event loop.
struct GRPCRequestReader {
    /// Why a call's request cannot be read; each is answered with a gRPC status.
    enum Failure: Error, Equatable {
        /// The message's length prefix says more than the limit (bytes).
        case tooLarge(length: Int, limit: Int)
        /// The compressed flag is set: Weir takes identity-encoded messages only.
        case compressed
        /// The flag byte is neither 0 nor 1.
        case invalidFlag(UInt8)
        /// More than one message (a unary method takes exactly one).
        case secondMessage
        /// The request ended with no message, or in the middle of one.
        case incomplete(buffered: Int)

        static let compressedStatus: GRPCStatus = {
            var status = GRPCStatus(.unimplemented, "compressed messages are not supported; send them uncompressed (grpc-encoding identity)")
            status.acceptEncoding = "identity"
            return status
        }()

        /// The status the call ends with (`grpc/doc/statuscodes.md`).
        var status: GRPCStatus {
            switch self {
            case .tooLarge(let length, let limit):
                GRPCStatus(.resourceExhausted, "the request message is \(length) bytes, over the limit of \(limit)")
            case .compressed:
                Self.compressedStatus
            case .invalidFlag(let flag):
                GRPCStatus(.internal, "the message's compressed flag is \(flag), not 0 or 1")
            case .secondMessage:
                GRPCStatus(.unimplemented, "a unary method takes exactly one request message; more than one came")
            case .incomplete(let buffered):
                buffered == 0
                    ? GRPCStatus(.unimplemented, "a unary method takes exactly one request message; none came")
                    : GRPCStatus(.internal, "the request ended inside a message (\(buffered) bytes of it came)")
            }
        }
    }

    /// The longest request message taken, in bytes.
    let maxMessageBytes: Int
    /// Bytes of the message being read (prefix included) not yet whole.
    private var partial: ByteBuffer?
    /// The message, once read whole.
    private(set) var message: ByteBuffer?

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    /// Bytes held for a message not yet whole.
    var bufferedBytes: Int { partial?.readableBytes ?? 0 }

    /// Takes the bytes of one DATA frame.
    mutating func append(_ bytes: ByteBuffer) throws(Failure) {
        var bytes = bytes
        while bytes.readableBytes > 0 {
            guard message == nil else { throw .secondMessage }
            if partial == nil, bytes.readableBytes >= 5 {
                // The common case: the whole prefix in this frame, read without copying.
                try take(&bytes)
                continue
            }
            // A prefix or message split across frames: gathered in `partial`.
            var gathered = partial ?? ByteBuffer()
            gathered.writeBuffer(&bytes)
            partial = nil
            try take(&gathered)
            if gathered.readableBytes > 0 {
                guard message == nil else { throw .secondMessage }
                partial = gathered
            }
        }
    }

    /// Reads one message from the front of `bytes` when it is all there; leaves
    /// `bytes` untouched when only part of it is.
    private mutating func take(_ bytes: inout ByteBuffer) throws(Failure) {
        guard let flag = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self),
            let length = bytes.getInteger(at: bytes.readerIndex + 1, as: UInt32.self)
        else { return }
        switch flag {
        case 0: break
        case 1: throw .compressed
        default: throw .invalidFlag(flag)
        }
        guard length <= maxMessageBytes else { throw .tooLarge(length: Int(length), limit: maxMessageBytes) }
        guard bytes.readableBytes >= 5 + Int(length) else {
            if partial == nil {
                partial = bytes
                bytes.moveReaderIndex(forwardBy: bytes.readableBytes)
            }
            return
        }
        bytes.moveReaderIndex(forwardBy: 5)
        message = bytes.readSlice(length: Int(length))
    }

    /// The request's one message, at the end of the request.
    mutating func finish() throws(Failure) -> ByteBuffer {
        guard let message else { throw .incomplete(buffered: bufferedBytes) }
        return message
    }
}
