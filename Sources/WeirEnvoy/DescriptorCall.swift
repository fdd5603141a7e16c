/// One Envoy rate limit descriptor read as a Weir call: whose, which API and model,
/// how many units, and whether it asks admission or reports usage.
///
/// **Entries** (keys are matched exactly; each may appear once):
///
/// | key | value |
/// | --- | --- |
/// | `api_key` | the caller's API key (a leading `Bearer ` is dropped, so a `request_headers` action on `authorization` works); resolved through the registry and the config's key hashes |
/// | `account` | an account id, for setups that authenticate before Envoy (exactly one of `api_key` and `account`) |
/// | `api` | the catalogue API: `text`, `t2a`, `image-generation`, ... (required) |
/// | `model` | the model; absent means the empty model (APIs whose rules list no models) |
/// | `charge` | `call` (default): admission of one call; `usage`: a report of units used, sent after the response (`apply_on_stream_done`) |
/// | `max_wait_ms` | wait up to this many milliseconds for room instead of OVER_LIMIT (a whole number; the service caps it at the server's `--max-wait-ms`) |
///
/// Entries with other keys (`generic_key`, `remote_address`, ...) are ignored, so a
/// descriptor may carry entries meant for other services.
///
/// **Units** are the descriptor's `hits_addend` when set, else the request's
/// `hits_addend` (0 when Envoy sets none). A `call` costs 1 request and its units as
/// the token estimate; a `usage` report adds its units to the tokens dimension only.
public struct DescriptorCall: Sendable, Hashable {
    /// Who is calling.
    public enum Identity: Sendable, Hashable {
        case apiKey(String)
        case account(String)
    }

    /// What the descriptor asks.
    public enum Charge: String, Sendable, Hashable {
        /// Admit one call: 1 request, `units` tokens reserved; OVER_LIMIT when it does not fit.
        case call
        /// Record `units` used by a call already made (tokens only); always OK.
        case usage
    }

    public var identity: Identity
    public var api: String
    public var model: String
    public var charge: Charge
    /// Units on the rule's meter (tokens, characters, images).
    public var units: UInt64
    /// How long the call may wait for room, in milliseconds; nil when the descriptor
    /// does not say (the rule's `max_wait` applies).
    public var maxWaitMilliseconds: UInt64?

    public init(
        identity: Identity, api: String, model: String, charge: Charge = .call, units: UInt64 = 0,
        maxWaitMilliseconds: UInt64? = nil
    ) {
        self.identity = identity
        self.api = api
        self.model = model
        self.charge = charge
        self.units = units
        self.maxWaitMilliseconds = maxWaitMilliseconds
    }

    /// Reads `entries` as a call, or says why they are not one.
    ///
    /// - Parameters:
    ///   - descriptorHits: the descriptor's own `hits_addend`, when set.
    ///   - requestHits: the request's `hits_addend` (0: not set).
    ///   - negativeHits: the descriptor's `is_negative_hits` (a give-back, which Weir does not take).
    public static func read(
        entries: [(key: String, value: String)],
        descriptorHits: UInt64?,
        requestHits: UInt32,
        negativeHits: Bool = false
    ) -> Result<DescriptorCall, UnknownDescriptorReason> {
        read(
            entries: entries, key: \.key, value: \.value, descriptorHits: descriptorHits, requestHits: requestHits,
            negativeHits: negativeHits)
    }

    /// `read(entries:descriptorHits:requestHits:negativeHits:)` over any sequence of
    /// entries, read through `key` and `value`: the service passes the request's own
    /// entries, copying nothing.
    static func read<Entries: Sequence>(
        entries: Entries,
        key keyPath: KeyPath<Entries.Element, String>,
        value valuePath: KeyPath<Entries.Element, String>,
        descriptorHits: UInt64?,
        requestHits: UInt32,
        negativeHits: Bool
    ) -> Result<DescriptorCall, UnknownDescriptorReason> {
        var apiKey: String?
        var account: String?
        var api: String?
        var model: String?
        var charge: Charge = .call
        var maxWait: UInt64?
        // One bit per key of Weir's seen so far (a key twice is an error).
        var seen: UInt8 = 0
        for entry in entries {
            let bit: UInt8
            switch entry[keyPath: keyPath] {
            case "api_key": bit = 1
            case "account": bit = 2
            case "api": bit = 4
            case "model": bit = 8
            case "charge": bit = 16
            case "max_wait_ms": bit = 32
            default: continue
            }
            guard seen & bit == 0 else { return .failure(.duplicateEntry) }
            seen |= bit
            let value = entry[keyPath: valuePath]
            switch bit {
            case 1: apiKey = value
            case 2: account = value
            case 4: api = value
            case 8: model = value
            case 32:
                guard let milliseconds = UInt64(value) else { return .failure(.badMaxWait) }
                maxWait = milliseconds
            default:
                guard let parsed = Charge(rawValue: value) else { return .failure(.badCharge) }
                charge = parsed
            }
        }
        let identity: Identity
        switch (apiKey, account) {
        case (let key?, nil):
            let stripped = Self.strippingBearer(key)
            guard !stripped.isEmpty else { return .failure(.noIdentity) }
            identity = .apiKey(stripped)
        case (nil, let account?):
            guard Self.isValidAccountID(account) else { return .failure(.badAccount) }
            identity = .account(account)
        case (nil, nil):
            return .failure(.noIdentity)
        case (_?, _?):
            return .failure(.bothIdentities)
        }
        guard let api, !api.isEmpty else { return .failure(.noAPI) }
        guard !negativeHits else { return .failure(.negativeHits) }
        return .success(DescriptorCall(
            identity: identity, api: api, model: model ?? "", charge: charge,
            units: descriptorHits ?? UInt64(requestHits), maxWaitMilliseconds: maxWait))
    }

    /// `value` without a leading `Bearer ` (any case) and surrounding spaces.
    static func strippingBearer(_ value: String) -> String {
        var text = Substring(value)
        while text.first == " " { text = text.dropFirst() }
        if text.utf8.count >= 7, text.prefix(7).lowercased() == "bearer " {
            text = text.dropFirst(7)
        }
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }

    /// Account ids as the decision API takes them: 1 to 256 bytes, no control characters.
    static func isValidAccountID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 256
            && !id.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }
}

/// Why a descriptor was answered by the configured default rather than decided.
/// The raw value is the `reason` label of `weir_envoy_unknown_descriptors_total`.
public enum UnknownDescriptorReason: String, Sendable, Hashable, CaseIterable, Error {
    /// The request's domain is not the one Weir serves.
    case domain
    /// Neither `api_key` nor `account` (or an empty key).
    case noIdentity = "no_identity"
    /// Both `api_key` and `account`.
    case bothIdentities = "both_identities"
    /// An `account` that is not a valid account id.
    case badAccount = "bad_account"
    /// No `api` entry.
    case noAPI = "no_api"
    /// One of Weir's keys twice.
    case duplicateEntry = "duplicate_entry"
    /// `charge` other than `call` or `usage`.
    case badCharge = "bad_charge"
    /// `max_wait_ms` that is not a whole number of milliseconds.
    case badMaxWait = "bad_max_wait"
    /// `is_negative_hits`: a give-back, which Weir does not take.
    case negativeHits = "negative_hits"
    /// No account has this API key.
    case unknownAPIKey = "unknown_api_key"
    /// The catalogue has no such API.
    case unknownAPI = "unknown_api"
    /// The catalogue has no rule for this model of the API.
    case unknownModel = "unknown_model"
}
