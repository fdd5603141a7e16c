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
/// its own. If the store cannot be reached then, the settlement waits in the service's
/// `SettlementRetries` and is sent again when it answers; a refusal (the lease outlived
/// its TTL: its slot is free already) is final.
final class GatewayLease: Sendable {
    let id: LeaseID
    private let service: WeirService
    private struct State {
        var settled = false
        var fallbackUnits: UInt64
    }
    private let state: Mutex<State>

    init(id: LeaseID, service: WeirService, fallbackUnits: UInt64) {
        self.id = id
        self.service = service
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
        Self.settle(id, units: units, service: service)
    }

    deinit {
        let pending = state.withLock { $0.settled ? nil : $0.fallbackUnits }
        if let pending { Self.settle(id, units: pending, service: service) }
    }

    /// A refusal is final; a store that cannot be reached gets it again later.
    private static func settle(_ id: LeaseID, units: UInt64, service: WeirService) {
        if case .later(let wait) = service.limiter.settle(id, actualUnits: units) {
            wait { result in
                if case .failure(let error) = result, SettlementRetries.isUnavailable(error) {
                    service.settlementRetries.add(lease: id, units: units)
                }
            }
        }
    }
}
