import Foundation
import HTTPTypes
import Hummingbird
import ServiceLifecycle
import Synchronization
import WeirCore
import WeirAnswers
import WeirPolicy

/// The operators' dashboard and the usage stream behind it:
///
/// - `GET /dashboard`: the page (HTML, CSS and JavaScript embedded in `DashboardPage`,
///   no external asset). It holds no data and needs no token: the page asks for the
///   admin token and keeps it in the browser session (`sessionStorage`), never in a URL.
/// - `GET /admin/v1/usage`: one usage snapshot (admin token required).
/// - `GET /admin/v1/usage/stream`: server-sent events (`text/event-stream`), one
///   `usage` event per interval (`?interval_ms=`, 100 to 60000, default 1000), the
///   first at once; each event's `data` is one snapshot on one line and its `id` the
///   snapshot's sequence number. Admin token required, in `Authorization: Bearer`.
///
/// A snapshot (`usageSnapshotJSON`) is
/// `{"sequence", "minutes", "interval_ms", "tiers": [name], "rules": [{"name", "api",
/// "models", "dimensions"}], "accounts_total", "accounts": [account]}`, each account
/// `{"id", "tier", "pinned_tier", "recharges", "sources": ["registry" | "config" |
/// "traffic" | "refusals"], "closeness", "limits": [{"api", "rule", "scope", "models",
/// "dimension", "limit", "used", "remaining", "reset_ms"}], "refused", "refusals":
/// {reason: [30 counts, oldest minute first]}}`. `closeness` is the largest used/limit
/// of the account's limits (0 to 1, 4 decimals); accounts come closest first, at most
/// `maximumSnapshotAccounts` of them.
///
/// "traffic" accounts are those with state in this instance's in-memory store; with a
/// shared (Redis) store, accounts are found through the registry, the config and this
/// instance's refusals, and their usage is read from the shared store (one status call
/// per limit: a snapshot costs a few round trips per account).
extension WeirService {
    /// Accounts in one snapshot at most (the closest to a limit are kept).
    static let maximumSnapshotAccounts = 1000
    /// Usage streams open at once at most; more are refused with 503.
    static let maximumUsageStreams = 32

    func addDashboardRoutes(to router: Router<BasicRequestContext>) {
        router.get("/dashboard") { _, _ in DashboardPage.response(body: DashboardPage.html, type: "text/html; charset=utf-8") }
        router.get("/dashboard/app.js") { _, _ in
            DashboardPage.response(body: DashboardPage.script, type: "text/javascript; charset=utf-8")
        }
        router.get("/dashboard/app.css") { _, _ in DashboardPage.response(body: DashboardPage.style, type: "text/css; charset=utf-8") }
        let admin = router.group("/admin/v1").add(middleware: AdminAuthMiddleware(tokenHash: adminTokenHash))
        admin.get("usage") { _, _ in
            Response.json(status: .ok, try await self.usageSnapshotJSON(sequence: 0, interval: 0), headers: [.cacheControl: "no-store"])
        }
        admin.get("usage/stream") { request, _ in try self.usageStream(request) }
    }

    /// The `GET /admin/v1/usage/stream` response: an endless body that ends when the
    /// client goes away or the server shuts down gracefully.
    private func usageStream(_ request: Request) throws -> Response {
        var interval: UInt64 = 1000
        if let text = request.uri.queryParameters["interval_ms"] {
            guard let value = UInt64(text), (100...60_000).contains(value) else {
                throw APIError.badRequest(field: "interval_ms", "must be an integer from 100 to 60000 (milliseconds), got `\(text)`")
            }
            interval = value
        }
        let pauseMilliseconds = interval
        guard Self.openStreams.add(1, ordering: .relaxed).newValue <= Self.maximumUsageStreams else {
            Self.openStreams.subtract(1, ordering: .relaxed)
            throw APIError(
                status: .serviceUnavailable, code: "too_many_streams",
                message: "\(Self.maximumUsageStreams) usage streams are open already; close one or use GET /admin/v1/usage")
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer { Self.openStreams.subtract(1, ordering: .relaxed) }
                var sequence: UInt64 = 0
                // Ends when a write fails (the client went away), on cancellation, or at
                // graceful shutdown (checked between events, so at most one interval late).
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    sequence += 1
                    let snapshot = try await self.usageSnapshotJSON(sequence: sequence, interval: pauseMilliseconds)
                    try await writer.write(ByteBuffer(string: "event: usage\nid: \(sequence)\ndata: \(snapshot)\n\n"))
                    await Self.pause(milliseconds: pauseMilliseconds)
                }
                try await writer.finish(nil)
            })
    }

    /// Waits `milliseconds`, returning early at graceful shutdown (or cancellation).
    private static func pause(milliseconds: UInt64) async {
        try? await cancelWhenGracefulShutdown {
            try await Task.sleep(for: .milliseconds(milliseconds))
        }
    }

    /// Usage streams open now, across every application in this process.
    private static let openStreams = Atomic<Int>(0)

    /// One usage snapshot as JSON (see the extension's documentation).
    func usageSnapshotJSON(sequence: UInt64, interval: UInt64) async throws -> String {
        let catalogue = limiter.catalogue
        let refused = refusals.all()
        let waiting = limiter.waitingByAccount
        // Every account worth showing, and where the dashboard knows it from.
        var sources: [String: [String]] = [:]
        for id in registry.accountIDs { sources[id, default: []].append("registry") }
        for account in catalogue.accounts { sources[account.id, default: []].append("config") }
        for id in memoryStore.accounts(limit: Self.maximumSnapshotAccounts * 4) { sources[id, default: []].append("traffic") }
        for id in refused.keys { sources[id, default: []].append("refusals") }
        for id in waiting.keys { sources[id, default: []].append("waiting") }

        var accounts: [(id: String, closeness: Double, json: String)] = []
        accounts.reserveCapacity(sources.count)
        for (id, from) in sources {
            let profile = WeirService.profile(id: id, catalogue: catalogue, registry: registry)
            let limits = try await accountLimits(profile: profile, catalogue: catalogue)
            let closeness = limits.reduce(0.0) { most, entry in
                entry.status.limit == 0 ? most : max(most, Double(entry.used) / Double(entry.status.limit))
            }
            var json = JSONWriter(capacity: 1024)
            json.beginObject()
            Self.writeAccountFields(id: id, profile: profile, catalogue: catalogue, to: &json)
            json.key("sources")
            json.beginArray()
            for source in from { json.string(source) }
            json.endArray()
            json.key("closeness")
            json.raw(Self.fraction(closeness))
            json.key("limits")
            json.beginArray()
            for entry in limits { entry.write(to: &json) }
            json.endArray()
            let series = refused[id]
            json.field("refused", series?.total ?? 0)
            json.field("waiting", UInt64(waiting[id] ?? 0))
            json.key("refusals")
            json.beginObject()
            for reason in DenialReason.allCases {
                guard let counts = series?.counts[reason] else { continue }
                json.key(reason.rawValue)
                json.beginArray()
                for count in counts { json.integer(UInt64(count)) }
                json.endArray()
            }
            json.endObject()
            json.endObject()
            accounts.append((id, closeness, json.text))
        }
        accounts.sort { $0.closeness != $1.closeness ? $0.closeness > $1.closeness : $0.id < $1.id }

        var json = JSONWriter(capacity: 4096 + accounts.count * 1024)
        json.beginObject()
        json.field("sequence", sequence)
        json.key("minutes")
        json.integer(RefusalHistory.minutes)
        json.field("interval_ms", interval)
        json.key("tiers")
        json.beginArray()
        for tier in catalogue.tiers { json.string(tier.name) }
        json.endArray()
        json.key("rules")
        json.beginArray()
        for rule in catalogue.rules {
            json.beginObject()
            json.field("name", rule.name)
            json.field("api", rule.api)
            json.key("models")
            json.beginArray()
            for model in rule.models { json.string(model) }
            json.endArray()
            json.key("dimensions")
            json.beginArray()
            if rule.limits.contains(where: { $0.requests != nil }) { json.string("requests") }
            if rule.limits.contains(where: { $0.tokens != nil }) { json.string("tokens") }
            if rule.limits.contains(where: { $0.concurrency != nil }) { json.string("concurrency") }
            json.endArray()
            json.endObject()
        }
        json.endArray()
        json.key("accounts_total")
        json.integer(accounts.count)
        json.key("accounts")
        json.beginArray()
        for account in accounts.prefix(Self.maximumSnapshotAccounts) { json.raw(account.json) }
        json.endArray()
        json.endObject()
        return json.text
    }

    /// `value` (0 to 1) with at most 4 decimals, as JSON.
    private static func fraction(_ value: Double) -> String {
        let scaled = Int((min(max(value, 0), 1) * 10_000).rounded())
        if scaled == 10_000 { return "1" }
        let digits = String(scaled)
        return "0." + String(repeating: "0", count: 4 - digits.count) + digits
    }

    /// One limit of an account, per dimension, as `GET /admin/v1/accounts/{id}/usage`
    /// and the usage snapshot show it.
    struct AccountLimit {
        var rule: Rule
        var scope: String
        var models: [String]
        var dimension: WeirCore.Dimension
        var status: DimensionStatus

        var used: UInt64 { status.limit - min(status.remaining, status.limit) }

        func write(to json: inout JSONWriter) {
            json.beginObject()
            json.field("api", rule.api)
            json.field("rule", rule.name)
            json.field("scope", scope)
            json.key("models")
            json.beginArray()
            for model in models { json.string(model) }
            json.endArray()
            json.field("dimension", dimension.rawValue)
            json.field("limit", status.limit)
            json.field("used", used)
            json.field("remaining", status.remaining)
            json.field("reset_ms", Nanoseconds.millisecondsRoundedUp(status.reset))
            json.endObject()
        }
    }

    /// Every limit of `profile`: each budget of each rule available to its tier, per
    /// dimension. A rule that lists no model is shown for the model `""`.
    func accountLimits(profile: AccountProfile, catalogue: Catalogue) async throws -> [AccountLimit] {
        var limits: [AccountLimit] = []
        var seen = Set<String>()
        for rule in catalogue.rules {
            for model in rule.models.isEmpty ? [""] : rule.models {
                guard let resolution = try? catalogue.resolve(account: profile, api: rule.api, model: model),
                    resolution.rule.name == rule.name, seen.insert(resolution.key.scope).inserted
                else { continue }
                let statuses = try await limiter.store.status(of: resolution.key, limits: resolution.limits)
                for dimension in Dimension.allCases {
                    guard let status = statuses[dimension] else { continue }
                    limits.append(
                        AccountLimit(
                            rule: rule, scope: resolution.key.scope, models: rule.scope == .shared ? rule.models : [model],
                            dimension: dimension, status: status))
                }
            }
        }
        return limits
    }
}
