import Foundation
import Synchronization

/// A child's output as it arrives (give `append` to `ChildProcess`'s `onOutput`), for
/// waits that wake on each piece of it rather than poll: "until the server says it is
/// ready".
///
/// Concurrency: thread-safe. One waiter at a time.
public final class ChildOutput: Sendable {
    private let content = Mutex<(text: String, ended: Bool)>(("", false))
    /// Signalled at each piece of output and at its end, for `wait(for:timeout:)`.
    private let changed = DispatchSemaphore(value: 0)
    /// The same, for `wait(for:)`.
    private let changes: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() {
        (changes, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// The output so far.
    public var text: String { content.withLock { $0.text } }

    /// A piece of output, or its end (empty).
    public func append(_ bytes: [UInt8]) {
        content.withLock { content in
            if bytes.isEmpty { content.ended = true } else { content.text += String(decoding: bytes, as: UTF8.self) }
        }
        changed.signal()
        continuation.yield()
    }

    /// Blocks until the output contains `marker` (true), or ends or `timeout` passes
    /// without it (false).
    public func wait(for marker: String, timeout: Duration) -> Bool {
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let deadline = DispatchTime.now() + .nanoseconds(Int(nanoseconds))
        while true {
            let (text, ended) = content.withLock { $0 }
            if text.contains(marker) { return true }
            if ended || changed.wait(timeout: deadline) == .timedOut { return false }
        }
    }

    /// Waits until the output contains `marker` (true) or ends without it (false). A
    /// child that neither says it nor exits is ended by the test's time limit.
    public func wait(for marker: String) async -> Bool {
        var iterator = changes.makeAsyncIterator()
        while true {
            let (text, ended) = content.withLock { $0 }
            if text.contains(marker) { return true }
            if ended { return false }
            guard await iterator.next() != nil else { return false }
        }
    }
}
