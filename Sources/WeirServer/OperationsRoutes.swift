import HTTPTypes
import Hummingbird
import WeirCore
import WeirHummingbird

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
            let bytes = self.metrics.exposition(activeLeases: self.memoryStore.activeLeaseCount, store: self.storeCounts)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }

    /// `/readyz`: 200 `ready`; 200 `degraded` while Redis fails and the `local` or `allow`
    /// mode decides (the instance still serves); 503 `not_ready` when the registry does
    /// not answer or Redis fails under the `deny` mode (every decision would be 503).
    func readiness() async -> Response {
        let registryReady = await registry.isReachable()
        let health = sharedStore?.health
        let degraded = health?.isDegraded ?? false
        let serving = registryReady && !(degraded && sharedStore?.mode == .deny)
        var json = JSONWriter()
        json.beginObject()
        json.field("status", !serving ? "not_ready" : degraded ? "degraded" : "ready")
        if let sharedStore, let health {
            json.field("store", "redis")
            json.field("store_state", health.isDegraded ? "unreachable" : "ok")
            json.field("on_store_failure", sharedStore.mode.rawValue)
            if health.isDegraded { json.field("store_error", optional: health.lastError) }
        } else {
            json.field("store", "memory")
        }
        json.field("registry", registryReady ? "ok" : "unreachable")
        json.endObject()
        return Response.json(status: serving ? .ok : .serviceUnavailable, json.text)
    }

    /// The shared store's own counts, for `/metrics`; nil in memory.
    var storeCounts: ServerMetrics.StoreCounts? {
        guard let sharedStore else { return nil }
        let health = sharedStore.health
        return ServerMetrics.StoreCounts(
            degraded: health.isDegraded, outages: health.outages, fallbackDecisions: health.fallbackDecisions,
            denialCacheHits: (sharedStore.primary as? DenialCache)?.hits ?? 0)
    }
}
