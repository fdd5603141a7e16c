import HTTPTypes
import Hummingbird
import WeirHummingbird

/// `GET /healthz`, `GET /readyz`, `GET /metrics`.
extension WeirService {
    func addOperationsRoutes(to router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in
            Response.json(status: .ok, #"{"status":"ok"}"#)
        }
        router.get("/readyz") { _, _ in
            // The in-memory store is always reachable; the registry file must answer.
            let registryReady = await self.registry.isReachable()
            var json = JSONWriter()
            json.beginObject()
            json.field("status", registryReady ? "ready" : "not_ready")
            json.field("store", "memory")
            json.field("registry", registryReady ? "ok" : "unreachable")
            json.endObject()
            return Response.json(status: registryReady ? .ok : .serviceUnavailable, json.text)
        }
        router.get("/metrics") { _, _ in
            let bytes = self.metrics.exposition(activeLeases: self.store.activeLeaseCount)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }
}
