import Synchronization
import WeirCore

/// The lease of one gateway call, settled exactly once whatever way the call ends.
///
/// The streaming code keeps `fallbackUnits` current (what the call has used as far as
/// the gateway knows) and settles with the true figure at the end. If the response is
/// dropped before that (a connection closed before the body was written, a cancelled
/// task), `deinit` settles with `fallbackUnits`, so the concurrency slot never waits
/// for the lease's TTL.
///
/// Concurrency: thread-safe (one `Mutex`); settling never suspends (the in-memory store).
final class GatewayLease: Sendable {
    let id: LeaseID
    private let store: InMemoryStore
    private struct State {
        var settled = false
        var fallbackUnits: UInt64
    }
    private let state: Mutex<State>

    init(id: LeaseID, store: InMemoryStore, fallbackUnits: UInt64) {
        self.id = id
        self.store = store
        self.state = Mutex(State(fallbackUnits: fallbackUnits))
    }

    /// Whether the lease has been settled.
    var isSettled: Bool { state.withLock { $0.settled } }

    /// What to settle with if the call ends without a settlement.
    func updateFallback(_ units: UInt64) {
        state.withLock { $0.fallbackUnits = units }
    }

    /// Settles with `units`; later calls do nothing. Nil when already settled, or when
    /// the store refuses (the lease outlived its TTL: its slot is free already).
    @discardableResult
    func settle(_ units: UInt64) -> Settlement? {
        let first = state.withLock { state in
            defer { state.settled = true }
            return !state.settled
        }
        guard first else { return nil }
        return try? store.settle(id, actualUnits: units)
    }

    deinit {
        let pending = state.withLock { $0.settled ? nil : $0.fallbackUnits }
        if let pending { _ = try? store.settle(id, actualUnits: pending) }
    }
}
