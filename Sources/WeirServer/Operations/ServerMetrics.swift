import CoreMetrics
import Prometheus
import Synchronization
import WeirCore
import WeirPolicy

/// The server's metrics, through swift-metrics into a Prometheus registry:
///
/// - `weir_decisions_total{api, model, outcome, reason}`: outcome `allowed`, `denied`
///   or `shadowed` (allowed by shadow mode although over a limit); reason `none`,
///   `requests`, `tokens`, `concurrency` or `too_large`;
/// - `weir_near_limit_total{api, model, dimension}`: allowed decisions that left a
///   dimension at 80% or more of its limit;
/// - `weir_active_leases`: leases issued and not yet settled or expired;
/// - `weir_decision_duration_seconds`: time from a decision request's parsed body to
///   its answer (histogram);
/// - `weir_config_reloads_total{result}`;
/// - with a shared store: `weir_store_degraded` (1 while Redis is failing and the
///   failure mode decides), `weir_store_outages_total`, `weir_store_fallback_decisions_total`
///   (decisions the failure mode made) and `weir_denial_cache_hits_total` (denials
///   answered from the local cache without a round trip);
/// - `weir_waiting_calls`: calls waiting for room now (`max_wait_ms`), and
///   `weir_waits_total{outcome}`: waits ended `admitted`, `refused`, `cancelled` (the
///   caller went away) or `overflow` (refused at once: too many waiting).
///
/// **Cardinality.** Label values come from the catalogue only: `api` is a rule's API,
/// `model` one of its listed models or `*` for a rule that lists none. Every metric
/// object is created when a catalogue is installed (`prepare`), never per decision;
/// a decision looks its counters up in a table built then.
final class ServerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let tables: Mutex<[LabelKey: DecisionCounters]>
    let latency: CoreMetrics.Timer
    private let activeLeases: CoreMetrics.Gauge
    private let storeKeys: CoreMetrics.Gauge
    private let reloadsSucceeded: CoreMetrics.Counter
    private let reloadsFailed: CoreMetrics.Counter
    private let storeDegraded: CoreMetrics.Gauge
    private let storeOutages: CoreMetrics.Counter
    private let fallbackDecisions: CoreMetrics.Counter
    private let denialCacheHits: CoreMetrics.Counter
    private let settlementsWaiting: CoreMetrics.Gauge
    private let settlementsDropped: CoreMetrics.Counter
    private let waitingCalls: CoreMetrics.Gauge
    private let waits: [WaitOutcome: CoreMetrics.Counter]
    /// The store counts last exported, so that counters advance by the difference.
    private let exported = Mutex(StoreCounts())

    /// Counts a shared store keeps itself; exported as counters.
    struct StoreCounts: Sendable {
        var degraded = false
        var outages: UInt64 = 0
        var fallbackDecisions: UInt64 = 0
        var denialCacheHits: UInt64 = 0
        /// Gateway settlements waiting for the store (`SettlementRetries`), and those
        /// given up because too many waited.
        var settlementsWaiting = 0
        var settlementsDropped = 0
    }

    struct LabelKey: Hashable, Sendable {
        var api: String
        var model: String
    }

    /// The counters of one (api, model) label pair.
    final class DecisionCounters: Sendable {
        /// Index: 0 allowed; 1...4 denied by requests, tokens, concurrency, too_large;
        /// 5...8 shadowed, same order.
        let decisions: [CoreMetrics.Counter]
        /// Index: requests, tokens, concurrency.
        let nearLimit: [CoreMetrics.Counter]

        init(api: String, model: String, factory: any MetricsFactory) {
            var decisions = [CoreMetrics.Counter(
                label: "weir_decisions_total",
                dimensions: [("api", api), ("model", model), ("outcome", "allowed"), ("reason", "none")],
                factory: factory)]
            for outcome in ["denied", "shadowed"] {
                for reason in ServerMetrics.reasons {
                    decisions.append(CoreMetrics.Counter(
                        label: "weir_decisions_total",
                        dimensions: [("api", api), ("model", model), ("outcome", outcome), ("reason", reason.rawValue)],
                        factory: factory))
                }
            }
            self.decisions = decisions
            nearLimit = Dimension.allCases.map { dimension in
                CoreMetrics.Counter(
                    label: "weir_near_limit_total",
                    dimensions: [("api", api), ("model", model), ("dimension", dimension.rawValue)],
                    factory: factory)
            }
        }
    }

    static let reasons: [DenialReason] = [.requests, .tokens, .concurrency, .tooLarge]

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["weir_decision_duration_seconds"] = [
            .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250),
            .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(100),
        ]
        self.factory = factory
        tables = Mutex([:])
        latency = CoreMetrics.Timer(label: "weir_decision_duration_seconds", factory: factory)
        activeLeases = CoreMetrics.Gauge(label: "weir_active_leases", factory: factory)
        storeKeys = CoreMetrics.Gauge(label: "weir_memory_store_keys", factory: factory)
        reloadsSucceeded = CoreMetrics.Counter(label: "weir_config_reloads_total", dimensions: [("result", "success")], factory: factory)
        reloadsFailed = CoreMetrics.Counter(label: "weir_config_reloads_total", dimensions: [("result", "failure")], factory: factory)
        storeDegraded = CoreMetrics.Gauge(label: "weir_store_degraded", factory: factory)
        storeOutages = CoreMetrics.Counter(label: "weir_store_outages_total", factory: factory)
        fallbackDecisions = CoreMetrics.Counter(label: "weir_store_fallback_decisions_total", factory: factory)
        denialCacheHits = CoreMetrics.Counter(label: "weir_denial_cache_hits_total", factory: factory)
        settlementsWaiting = CoreMetrics.Gauge(label: "weir_gateway_settlements_waiting", factory: factory)
        settlementsDropped = CoreMetrics.Counter(label: "weir_gateway_settlements_dropped_total", factory: factory)
        waitingCalls = CoreMetrics.Gauge(label: "weir_waiting_calls", factory: factory)
        var waits: [WaitOutcome: CoreMetrics.Counter] = [:]
        for outcome in WaitOutcome.allCases {
            waits[outcome] = CoreMetrics.Counter(label: "weir_waits_total", dimensions: [("outcome", outcome.rawValue)], factory: factory)
        }
        self.waits = waits
    }

    /// Counts a wait that ended.
    func recordWait(_ outcome: WaitOutcome) {
        waits[outcome]?.increment()
    }

    /// Creates the counters of every (api, model) of `catalogue` not seen before.
    /// Counters of earlier catalogues stay (a reload never drops a series).
    func prepare(_ catalogue: Catalogue) {
        var wanted: [LabelKey] = []
        for rule in catalogue.rules {
            if rule.models.isEmpty {
                wanted.append(LabelKey(api: rule.api, model: "*"))
            } else {
                wanted += rule.models.map { LabelKey(api: rule.api, model: $0) }
            }
        }
        let missing = tables.withLock { table in wanted.filter { table[$0] == nil } }
        guard !missing.isEmpty else { return }
        let created = missing.map { ($0, DecisionCounters(api: $0.api, model: $0.model, factory: factory)) }
        tables.withLock { table in
            for (key, counters) in created where table[key] == nil { table[key] = counters }
        }
    }

    /// The label of the model of a call resolved to `rule`: the model itself when the
    /// rule lists it, `*` otherwise.
    static func modelLabel(rule: Rule, model: String) -> String {
        rule.models.isEmpty ? "*" : model
    }

    /// Counts one decision.
    func record(api: String, model: String, decision: Decision) {
        guard let counters = tables.withLock({ $0[LabelKey(api: api, model: model)] }) else { return }
        let index: Int
        if let reason = decision.reason {
            let offset = Self.reasons.firstIndex(of: reason)! + 1
            index = decision.isShadowed ? offset + 4 : offset
        } else {
            index = 0
        }
        counters.decisions[index].increment()
        guard decision.isAllowed else { return }
        for (position, dimension) in Dimension.allCases.enumerated() {
            if let status = decision.limits[dimension], status.remaining.multipliedReportingOverflow(by: 5).partialValue <= status.limit {
                counters.nearLimit[position].increment()
            }
        }
    }

    func reloaded(success: Bool) {
        (success ? reloadsSucceeded : reloadsFailed).increment()
    }

    /// The Prometheus text exposition, with `activeLeases` (the store's exact count of
    /// leases issued and neither settled nor expired) as the `weir_active_leases` gauge.
    /// With a shared store, `store` carries its own counts.
    func exposition(activeLeases active: Int, keys: Int = 0, waiting: Int = 0, store: StoreCounts? = nil) -> [UInt8] {
        activeLeases.record(active)
        storeKeys.record(keys)
        waitingCalls.record(waiting)
        if let store {
            let before = exported.withLock { previous in
                defer { previous = store }
                return previous
            }
            storeDegraded.record(store.degraded ? 1 : 0)
            storeOutages.increment(by: Int64(clamping: store.outages &- before.outages))
            fallbackDecisions.increment(by: Int64(clamping: store.fallbackDecisions &- before.fallbackDecisions))
            denialCacheHits.increment(by: Int64(clamping: store.denialCacheHits &- before.denialCacheHits))
            settlementsWaiting.record(store.settlementsWaiting)
            settlementsDropped.increment(by: Int64(store.settlementsDropped - before.settlementsDropped))
        }
        return registry.emitToBuffer()
    }
}
