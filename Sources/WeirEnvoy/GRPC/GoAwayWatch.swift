import NIOHTTP2

/// Sees the frames `NIOHTTP2Handler` writes, to know when it has ended the connection
/// for an error (a GOAWAY with an error code).
///
/// Not thread-safe: one per connection, on its event loop.
final class GoAwayWatch: NIOHTTP2FrameDelegate {
    /// Whether a GOAWAY with an error code has been written.
    private(set) var sentError = false

    func wroteFrame(_ frame: HTTP2Frame) {
        if case .goAway(_, let code, _) = frame.payload, code != .noError { sentError = true }
    }
}
