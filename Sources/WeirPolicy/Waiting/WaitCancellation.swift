import Synchronization

/// Lets the caller of a waiting decision give up: the client went away. Created by the
/// caller and passed to `Limiter.acquire(_:units:leaseTTL:model:maxWait:cancellation:)`;
/// `cancel()` takes the call out of its queue at once, answers it with
/// `WaitCancelled`, and leaves nothing held (a decision that admitted it meanwhile has
/// its lease settled with no units).
///
/// Concurrency: thread-safe; `cancel()` may be called from any thread, any number of
/// times, before or after the wait began or ended.
public final class WaitCancellation: Sendable {
    private let state = Mutex<(cancelled: Bool, action: (@Sendable () -> Void)?)>((false, nil))

    public init() {}

    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    public func cancel() {
        let action: (@Sendable () -> Void)? = state.withLock { state in
            guard !state.cancelled else { return nil }
            state.cancelled = true
            defer { state.action = nil }
            return state.action
        }
        action?()
    }

    /// Registers what cancelling does; runs it at once when already cancelled.
    func onCancel(_ action: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state in
            if state.cancelled { return true }
            state.action = action
            return false
        }
        if runNow { action() }
    }
}

/// The answer to a waiting call whose caller gave up (`WaitCancellation`).
public struct WaitCancelled: Error, Sendable, CustomStringConvertible {
    public var description: String { "the caller stopped waiting" }
}
