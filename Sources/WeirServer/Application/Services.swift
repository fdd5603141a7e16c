import AsyncHTTPClient
import Logging
import ServiceLifecycle
import UnixSignals
import WeirCore
import WeirPolicy
import WeirRedis

#if os(Linux)
/// glibc's `malloc_trim(3)`: returns free memory at the top and inside the heap's arenas
/// to the system. Declared here because Swift's Glibc module does not export it.
@_silgen_name("malloc_trim")
private func mallocTrim(_ pad: Int) -> Int32
#endif

/// Sweeps idle keys and finished leases from the store every `interval`, and gives the
/// memory they held back to the operating system.
///
/// The sweep shrinks the store's tables when they are mostly empty; glibc's allocator
/// keeps freed memory in its arenas, though, so once a sweep (this one, or one a
/// decision triggered since the last) has shrunk a table, the service asks it to return
/// free pages (`malloc_trim`): resident memory then falls back near its baseline once a
/// burst of callers goes quiet (`bench/unseen_callers.py`). Only then: a trim holds each
/// arena's lock while it walks it, and a steady churn of keys frees nothing worth it.
struct EvictionService: Service {
    let store: InMemoryStore
    let interval: Duration

    func run() async throws {
        // Graceful shutdown cancels the loop; that is its normal end, not an error.
        try? await cancelWhenGracefulShutdown {
            var shrunk = store.tablesShrunk
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                store.evictIdle()
                let now = store.tablesShrunk
                if now != shrunk { Self.returnFreeMemory() }
                shrunk = now
            }
        }
    }

    /// Returns the allocator's free pages to the system (glibc); a few milliseconds.
    static func returnFreeMemory() {
        #if os(Linux)
        _ = mallocTrim(0)
        #endif
    }
}

/// Probes the shared store in the background (`FailoverStore.probeIfDue`): while Redis
/// is unreachable, on the store's capped exponential backoff, so that decisions,
/// `/readyz`, the dashboard and `/metrics` return to normal by themselves once Redis
/// answers, whether or not any call comes; while it answers, every health interval, so
/// that an outage is seen without traffic too.
struct StoreProbeService: Service {
    let store: FailoverStore

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let wait = await store.probeIfDue()
                if wait > 0 { try await Task.sleep(for: .nanoseconds(Int64(min(wait, UInt64(Int64.max))))) }
            }
        }
    }
}

/// Sends the gateway's settlements that found the shared store unreachable again, every
/// `interval`, until the store takes them (`SettlementRetries`): a slot held through an
/// outage is freed within `interval` of Redis answering again, without any call.
struct SettlementRetryService: Service {
    let retries: SettlementRetries
    let limiter: Limiter
    var interval: Duration = .milliseconds(500)

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                guard retries.count > 0 else { continue }
                await retries.retry { entry in
                    do {
                        _ = try await limiter.settled(entry.lease, actualUnits: entry.units)
                        return .answered
                    } catch where SettlementRetries.isUnavailable(error) {
                        return .unavailable
                    } catch {
                        return .answered
                    }
                }
            }
        }
    }
}

/// Keeps the registry open while the server runs and closes it after the server has
/// stopped (services shut down in reverse order, the HTTP server first), so in-flight
/// requests finish their writes first.
struct RegistryService: Service {
    let registry: Registry
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        do {
            try await registry.close()
            logger.debug("registry closed")
        } catch {
            logger.error("registry close failed", metadata: ["error": "\(error)"])
        }
    }
}

/// Reloads the config on SIGHUP.
struct HangupReloadService: Service {
    let service: WeirService

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            service.logger.info("SIGHUP: reloading the config")
            _ = service.reload()
        }
    }
}

/// Closes the Redis connections once the server has stopped.
struct RedisClientService: Service {
    let client: RedisClient

    func run() async throws {
        try? await gracefulShutdown()
        await client.close()
    }
}

/// Picks up registry changes made by other instances (Redis), every `interval`, and
/// logs each refresh that loaded some. A failed refresh is logged and retried at the
/// next tick; decisions go on with the snapshot they have.
struct RegistryRefreshService: Service {
    let registry: Registry
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            var failing = false
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                do {
                    if try await registry.refresh() { logger.info("registry: loaded changes made through another instance") }
                    if failing { logger.notice("registry refresh works again") }
                    failing = false
                } catch {
                    if !failing { logger.warning("registry refresh failed", metadata: ["error": "\(error)"]) }
                    failing = true
                }
            }
        }
    }
}

/// Shuts the gateway's upstream client down once the server has stopped (services
/// stop in reverse order, the HTTP server first, so in-flight calls finish first).
struct GatewayClientService: Service {
    let client: HTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
