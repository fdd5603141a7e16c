import Foundation
import HTTPTypes
import Hummingbird
import WeirCore
import WeirAnswers
import WeirPolicy

/// Refuses admin calls without the right bearer token: 403 when no token is
/// configured (the admin API is off), 401 when the token is missing or wrong. The
/// presented token is hashed and the hashes compared in constant time.
struct AdminAuthMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let tokenHash: [UInt8]?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let tokenHash else {
            throw APIError(
                status: .forbidden, code: "admin_disabled",
                message: "the admin API is disabled: no admin token is configured (start weir serve with --admin-token-file FILE or the WEIR_ADMIN_TOKEN environment variable)")
        }
        guard let authorization = request.headers[.authorization] else {
            throw APIError(status: .unauthorized, code: "missing_admin_token", message: "missing admin token: send Authorization: Bearer <admin token>")
        }
        let scheme = "bearer "
        guard authorization.utf8.count > scheme.utf8.count, authorization.lowercased().hasPrefix(scheme) else {
            throw APIError(status: .unauthorized, code: "missing_admin_token", message: "the Authorization header must be Bearer <admin token>")
        }
        let token = String(authorization.dropFirst(scheme.count)).trimmingCharacters(in: .whitespaces)
        guard ConstantTime.equals(Array(APIKeys.hash(token).utf8), tokenHash) else {
            throw APIError(status: .unauthorized, code: "wrong_admin_token", message: "wrong admin token")
        }
        return try await next(request, context)
    }
}

/// The admin API of DESIGN.md, under `/admin/v1`.
///
/// **Why its JSON is written by hand** (`JSONWriter`, `JSONValue`), though it is a cold
/// path: the answers are pinned byte for byte (the golden transcript; clients and the
/// dashboard read them), and Foundation's `JSONEncoder` on Linux writes an object's keys
/// in hash order and normalises decimals (`12.50` becomes `12.5`); and a request's errors
/// name the field and what was wrong with it (`tier: must be a tier name or null, got
/// number`), which `DecodingError` cannot say, nor tell `"tier": null` from no `tier`.
extension WeirService {
    func addAdminRoutes(to router: Router<BasicRequestContext>) {
        let admin = router.group("/admin/v1").add(middleware: AdminAuthMiddleware(tokenHash: adminTokenHash))
        admin.get("accounts/:id") { _, context in try await self.getAccount(try self.accountID(context)) }
        admin.put("accounts/:id") { request, context in try await self.putAccount(try self.accountID(context), request) }
        admin.post("accounts/:id/keys") { _, context in try await self.createKey(try self.accountID(context)) }
        admin.delete("keys/:prefix") { _, context in try await self.revokeKey(try context.parameters.require("prefix")) }
        admin.post("accounts/:id/recharges") { request, context in
            try await self.recharge(try self.accountID(context), request)
        }
        admin.get("accounts/:id/usage") { _, context in try await self.usage(try self.accountID(context)) }
        admin.post("reload") { _, _ in self.reloadResponse() }
    }

    private func accountID(_ context: BasicRequestContext) throws -> String {
        let id = try context.parameters.require("id")
        try validateAccountID(id, field: "id")
        return id
    }

    /// Whether the registry or the config file knows `id`.
    private func accountExists(_ id: String) -> Bool {
        registry.account(id: id) != nil || limiter.catalogue.account(id: id) != nil
    }

    private func unknownAccount(_ id: String) -> APIError {
        APIError(
            status: .notFound, code: "unknown_account",
            message: "unknown account `\(id)`: create it with PUT /admin/v1/accounts/\(id)", field: "id")
    }

    /// `"id", "tier", "pinned_tier", "recharges"`: how the admin API and the dashboard
    /// both open an account's object.
    static func writeAccountFields(id: String, profile: AccountProfile, catalogue: Catalogue, to json: inout JSONWriter) {
        json.field("id", id)
        json.field("tier", catalogue.tier(for: profile).name)
        json.field("pinned_tier", optional: profile.pinnedTier)
        json.key("recharges")
        json.raw(Registry.text(profile.recharges))
    }

    /// `{"id", "tier", "pinned_tier", "recharges", "overrides", "keys": [{"prefix", "created_at"}]}`.
    func accountJSON(_ id: String) -> String {
        let catalogue = limiter.catalogue
        let profile = WeirService.profile(id: id, catalogue: catalogue, registry: registry)
        var json = JSONWriter()
        json.beginObject()
        Self.writeAccountFields(id: id, profile: profile, catalogue: catalogue, to: &json)
        json.key("overrides")
        OverrideCoding.write(profile.overrides, to: &json)
        json.key("keys")
        json.beginArray()
        for key in registry.account(id: id)?.keys ?? [] {
            json.beginObject()
            json.field("prefix", key.prefix)
            json.field("created_at", key.createdAt)
            json.endObject()
        }
        json.endArray()
        json.endObject()
        return json.text
    }

    func getAccount(_ id: String) async throws -> Response {
        guard accountExists(id) else { throw unknownAccount(id) }
        return Response.json(status: .ok, accountJSON(id))
    }

    /// `PUT /admin/v1/accounts/{id}` `{"tier"?, "overrides"?}`: creates or updates.
    /// `"tier": null` removes the pin; omitted fields stay as they are.
    func putAccount(_ id: String, _ request: Request) async throws -> Response {
        let object = try await jsonObject(of: request)
        let catalogue = limiter.catalogue
        var pin = Registry.PinChange.keep
        switch object["tier"] {
        case nil: break
        case .null?: pin = .set(nil)
        case .string(let tier)?:
            guard catalogue.tiers.contains(where: { $0.name == tier }) else {
                let names = catalogue.tiers.map(\.name).joined(separator: ", ")
                throw APIError.badRequest(field: "tier", "unknown tier `\(tier)` (tiers: \(names))")
            }
            pin = .set(tier)
        case let other?:
            throw APIError.badRequest(field: "tier", "must be a tier name or null, got \(other.kind)")
        }
        var overrides: [Override]?
        if let value = object["overrides"] {
            let parsed = value == .null ? [] : try OverrideCoding.parse(value, field: "overrides")
            for (index, override) in parsed.enumerated() {
                guard let rule = catalogue.rules.first(where: { $0.name == override.rule }) else {
                    let names = catalogue.rules.map(\.name).joined(separator: ", ")
                    throw APIError.badRequest(field: "overrides[\(index)].rule", "unknown rule `\(override.rule)` (rules: \(names))")
                }
                if let model = override.model, !rule.models.isEmpty, !rule.models.contains(model) {
                    throw APIError.badRequest(
                        field: "overrides[\(index)].model",
                        "rule `\(rule.name)` has no model `\(model)` (models: \(rule.models.joined(separator: ", ")))")
                }
            }
            overrides = parsed
        }
        let existed = registry.account(id: id) != nil
        _ = try await registry.upsertAccount(id: id, pin: pin, overrides: overrides)
        logger.info("account updated", metadata: ["account": "\(id)"])
        return Response.json(status: existed ? .ok : .created, accountJSON(id))
    }

    /// `POST /admin/v1/accounts/{id}/keys` -> 201 `{"api_key", "prefix", "account"}`.
    /// The key is in this answer only; the registry keeps its prefix and SHA-256.
    func createKey(_ id: String) async throws -> Response {
        guard accountExists(id) else { throw unknownAccount(id) }
        _ = try await registry.ensureAccount(id: id)
        var generated = APIKeys.generate()
        var attempts = 0
        while try await registry.prefixExists(generated.prefix) {
            attempts += 1
            guard attempts < 8 else {
                throw APIError(
                    status: .serviceUnavailable, code: "key_generation_failed",
                    message: "could not find a free key prefix in 8 attempts; retry")
            }
            generated = APIKeys.generate()
        }
        let stored = try await registry.addKey(prefix: generated.prefix, hash: APIKeys.hash(generated.key), account: id)
        logger.info("api key created", metadata: ["account": "\(id)", "prefix": "\(stored.prefix)"])
        var json = JSONWriter()
        json.beginObject()
        json.field("api_key", generated.key)
        json.field("prefix", stored.prefix)
        json.field("account", id)
        json.field("created_at", stored.createdAt)
        json.endObject()
        return Response.json(status: .created, json.text)
    }

    /// `DELETE /admin/v1/keys/{prefix}` -> 200 `{"revoked", "account"}`, 404 if no live key has it.
    func revokeKey(_ prefix: String) async throws -> Response {
        guard let key = try await registry.revokeKey(prefix: prefix) else {
            throw APIError(status: .notFound, code: "unknown_key", message: "no live API key has the prefix `\(prefix)`", field: "prefix")
        }
        logger.info("api key revoked", metadata: ["account": "\(key.account)", "prefix": "\(key.prefix)"])
        var json = JSONWriter()
        json.beginObject()
        json.field("revoked", key.prefix)
        json.field("account", key.account)
        json.endObject()
        return Response.json(status: .ok, json.text)
    }

    /// `POST /admin/v1/accounts/{id}/recharges` `{"amount"}` -> the account, with the
    /// tier its new total puts it in; the next decision uses that tier.
    func recharge(_ id: String, _ request: Request) async throws -> Response {
        let object = try await jsonObject(of: request)
        guard accountExists(id) else { throw unknownAccount(id) }
        let amount: Decimal
        switch object["amount"] {
        case nil, .null?:
            throw APIError.badRequest(field: "amount", "required")
        case .number(let text)?:
            guard let value = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")), value > 0,
                value <= Decimal(1_000_000_000_000)
            else {
                throw APIError.badRequest(field: "amount", "must be a positive number of at most 1000000000000, got \(text)")
            }
            amount = value
        case let other?:
            throw APIError.badRequest(field: "amount", "must be a positive number, got \(other.kind)")
        }
        let before = limiter.catalogue.tier(for: limiter.profile(account: id)).name
        _ = try await registry.recharge(account: id, amount: amount)
        let after = limiter.catalogue.tier(for: limiter.profile(account: id)).name
        logger.info(
            "recharge recorded",
            metadata: ["account": "\(id)", "amount": "\(Registry.text(amount))", "tier": "\(before) -> \(after)"])
        return Response.json(status: .ok, accountJSON(id))
    }

    /// `GET /admin/v1/accounts/{id}/usage`: every limit of the account (each budget of
    /// each rule available to its tier), per dimension, with used, remaining and reset.
    /// A rule that lists no model is shown for the model `""`.
    func usage(_ id: String) async throws -> Response {
        let catalogue = limiter.catalogue
        let profile = WeirService.profile(id: id, catalogue: catalogue, registry: registry)
        var json = JSONWriter(capacity: 4096)
        json.beginObject()
        json.field("account", id)
        json.field("tier", catalogue.tier(for: profile).name)
        json.key("limits")
        json.beginArray()
        for limit in try await accountLimits(profile: profile, catalogue: catalogue) { limit.write(to: &json) }
        json.endArray()
        json.endObject()
        return Response.json(status: .ok, json.text)
    }

    /// `POST /admin/v1/reload`: 200 with the new rule count, 422 with every error of an
    /// invalid file (the running config is kept), 409 when there is no file.
    func reloadResponse() -> Response {
        switch reload() {
        case .success(let catalogue):
            var json = JSONWriter()
            json.beginObject()
            json.field("reloaded", true)
            json.field("config", configPath ?? "")
            json.key("rules")
            json.integer(catalogue.rules.count)
            json.endObject()
            return Response.json(status: .ok, json.text)
        case .failure(let errors):
            guard configPath != nil else {
                return Response.json(
                    status: .conflict,
                    APIError(status: .conflict, code: "no_config_file", message: errors.errors.first?.message ?? "no config file").json)
            }
            var details = JSONWriter()
            details.beginArray()
            for error in errors.errors {
                details.beginObject()
                details.field("path", error.path)
                details.field("line", optional: error.line.map { UInt64($0) })
                details.field("message", error.message)
                details.endObject()
            }
            details.endArray()
            let error = APIError(
                status: .unprocessableContent, code: "invalid_config",
                message: "the config file is invalid; the running config is kept:\n\(errors.description)",
                detailsJSON: details.text)
            return Response.json(status: error.status, error.json)
        }
    }
}
