import HTTPTypes
import Hummingbird
import WeirCore
import WeirAnswers

/// `GET /healthz`, `GET /readyz`, `GET /metrics`.
extension WeirService {
    func addOperationsRoutes(to router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in
            Response.json(status: .ok, #"{"status":"ok"}"#)
        }
        router.get("/readyz") { _, _ in
            await self.readiness()
        }
        router.get("/metrics") { _, _ in
            let bytes = self.metrics.exposition(
                activeLeases: self.memoryStore.activeLeaseCount, keys: self.memoryStore.keyCount,
                waiting: self.limiter.waitingCalls, store: self.storeCounts)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }

    /// `/readyz`: 200 `ready`; 200 `degraded` while Redis fails and the `local` or `allow`
    /// mode decides (the instance still serves, with the registry as last loaded);
    /// 503 `not_ready` when the SQLite registry does not answer, or Redis fails under
    /// the `deny` mode (every decision would be 503).
    func readiness() async -> Response {
        let registryReady = await registry.isReachable()
        var json = JSONWriter()
        json.beginObject()
        let status: String
        if let sharedStore {
            let health = sharedStore.health
            let failing = health.isDegraded || !registryReady
            status = !failing ? "ready" : sharedStore.mode == .deny ? "not_ready" : "degraded"
            json.field("status", status)
            json.field("store", "redis")
            json.field("store_state", failing ? "unreachable" : "ok")
            json.field("on_store_failure", sharedStore.mode.rawValue)
            if health.isDegraded { json.field("store_error", optional: health.lastError) }
            json.field("registry", registryReady ? "ok" : "unreachable (serving the last snapshot)")
        } else {
            status = registryReady ? "ready" : "not_ready"
            json.field("status", status)
            json.field("store", "memory")
            json.field("registry", registryReady ? "ok" : "unreachable")
        }
        json.endObject()
        return Response.json(status: status == "not_ready" ? .serviceUnavailable : .ok, json.text)
    }

    /// The shared store's own counts, for `/metrics`; nil in memory.
    var storeCounts: ServerMetrics.StoreCounts? {
        guard let sharedStore else { return nil }
        let health = sharedStore.health
        return ServerMetrics.StoreCounts(
            degraded: health.isDegraded, outages: health.outages, fallbackDecisions: health.fallbackDecisions,
            denialCacheHits: (sharedStore.primary as? DenialCache)?.hits ?? 0,
            settlementsWaiting: settlementRetries.count, settlementsDropped: settlementRetries.dropped)
    }
}
