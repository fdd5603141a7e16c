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
/// Concurrency: thread-safe (one `Mutex`); settling never suspends: with the in-memory
/// store it is done on the spot, with a shared store (Redis) it is sent from a task of
/// its own. If the store cannot be reached then, the settlement goes to `retries` and
/// is sent again when it answers (`SettlementRetries`); a refusal (the lease outlived
/// its TTL: its slot is free already) is final.
final class GatewayLease: Sendable {
    let id: LeaseID
    /// When the lease's TTL ends (the clock's nanoseconds).
    let expiresAt: UInt64
    private let service: WeirService
    private let retries: SettlementRetries
    private struct State {
        var settled = false
        var fallbackUnits: UInt64
    }
    private let state: Mutex<State>

    init(id: LeaseID, expiresAt: UInt64, service: WeirService, retries: SettlementRetries, fallbackUnits: UInt64) {
        self.id = id
        self.expiresAt = expiresAt
        self.service = service
        self.retries = retries
        self.state = Mutex(State(fallbackUnits: fallbackUnits))
    }

    /// Whether the lease has been settled.
    var isSettled: Bool { state.withLock { $0.settled } }

    /// What to settle with if the call ends without a settlement.
    func updateFallback(_ units: UInt64) {
        state.withLock { $0.fallbackUnits = units }
    }

    /// Settles with `units`; later calls do nothing.
    func settle(_ units: UInt64) {
        let first = state.withLock { state in
            defer { state.settled = true }
            return !state.settled
        }
        guard first else { return }
        Self.settle(SettlementRetries.Entry(lease: id, units: units, expiresAt: expiresAt), service: service, retries: retries)
    }

    deinit {
        let pending = state.withLock { $0.settled ? nil : $0.fallbackUnits }
        if let pending {
            Self.settle(SettlementRetries.Entry(lease: id, units: pending, expiresAt: expiresAt), service: service, retries: retries)
        }
    }

    /// A refusal is final; a store that cannot be reached gets it again later.
    private static func settle(_ entry: SettlementRetries.Entry, service: WeirService, retries: SettlementRetries) {
        if case .later(let wait) = service.limiter.settle(entry.lease, actualUnits: entry.units) {
            wait { result in
                if case .failure(let error) = result, SettlementRetries.isUnavailable(error) { retries.add(entry) }
            }
        }
    }
}
