/// Why a call's (API, model) has no limits for an account. Callers answer these as
/// a bad request (HTTP 400): the call is not one the platform serves.
public enum ResolutionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No rule names this API.
    case unknownAPI(String)
    /// The API is known, but no rule covers this model of it.
    case unknownModel(api: String, model: String)
    /// A rule covers the model, but has no limits for the account's tier (nor for `all`).
    case notAvailable(api: String, model: String, tier: String)

    public var description: String {
        switch self {
        case .unknownAPI(let api):
            "unknown API `\(api)`"
        case .unknownModel(let api, let model):
            "unknown model `\(model)` for API `\(api)`"
        case .notAvailable(let api, let model, let tier):
            "model `\(model)` of API `\(api)` is not available in tier `\(tier)`"
        }
    }
}
