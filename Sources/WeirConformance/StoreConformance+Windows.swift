import WeirCore

/// Checks of the two time-window algorithms through a store.
extension StoreConformance {
    static let second = Nanoseconds.perSecond

    static func key(_ account: String = "acct", scope: String = "text/MiniMax-M2") -> LimitKey {
        LimitKey(account: account, scope: scope)
    }

    /// A naive, obviously correct model of the sliding window: the list of admissions.
    struct WindowModel {
        var window: UInt64
        var requestLimit: UInt64
        var tokenLimit: UInt64
        var admitted: [(time: UInt64, tokens: UInt64)] = []

        /// What a store must decide for `units` at `now`: (reason, retryAfter).
        func decide(units: UInt64, now: UInt64) -> (DenialReason?, UInt64?) {
            if units > tokenLimit { return (.tooLarge, nil) }
            let live = admitted.filter { $0.time + window > now }
            let requestWait = wait(live.map { ($0.time, 1) }, cost: 1, limit: requestLimit, now: now)
            let tokenWait = wait(live.map { ($0.time, $0.tokens) }, cost: units, limit: tokenLimit, now: now)
            if requestWait == 0 && tokenWait == 0 { return (nil, nil) }
            return (requestWait > 0 ? .requests : .tokens, max(requestWait, tokenWait))
        }

        func wait(_ live: [(UInt64, UInt64)], cost: UInt64, limit: UInt64, now: UInt64) -> UInt64 {
            var used = live.reduce(0) { $0 + $1.1 }
            if used + cost <= limit { return 0 }
            for (time, entry) in live {
                used -= entry
                if used + cost <= limit { return time + window - now }
            }
            return .max
        }
    }

    static func slidingWindowMatchesModel(clock: ManualClock, store: any RateLimitStore) async throws {
        let window = 10 * second
        let limits = LimitSet(
            requests: Limit(algorithm: .slidingWindow, limit: 5, window: window),
            tokens: Limit(algorithm: .slidingWindow, limit: 100, window: window))
        for seed in 1...12 as ClosedRange<UInt64> {
            var random = SeededGenerator(seed: seed)
            var model = WindowModel(window: window, requestLimit: 5, tokenLimit: 100)
            let account = "model-\(seed)"
            for step in 0..<300 {
                if Bool.random(using: &random) { clock.advance(by: UInt64.random(in: 0...(3 * second), using: &random)) }
                let units = UInt64.random(in: 0...110, using: &random)
                let now = clock.now()
                let (reason, retry) = model.decide(units: units, now: now)
                let decision = try await store.acquire(AdmissionRequest(key: key(account), limits: limits, units: units))
                try require(
                    decision.reason == reason && decision.retryAfter == retry && decision.isAllowed == (reason == nil),
                    "seed \(seed) step \(step): units \(units) -> \(decision.reason.map(\.rawValue) ?? "allowed") retry \(String(describing: decision.retryAfter)), model says \(reason.map(\.rawValue) ?? "allowed") retry \(String(describing: retry))")
                if reason == nil {
                    model.admitted.append((now, units))
                    let live = model.admitted.filter { $0.time + window > now }
                    try require(
                        decision.limits.requests?.remaining == 5 - UInt64(live.count)
                            && decision.limits.tokens?.remaining == 100 - live.reduce(0) { $0 + $1.tokens },
                        "seed \(seed) step \(step): remaining \(String(describing: decision.limits)) disagrees with the model")
                }
            }
        }
    }

    static func slidingWindowNeverOverAdmits(clock: ManualClock, store: any RateLimitStore) async throws {
        let window = 60 * second
        let limits = LimitSet(
            requests: Limit(algorithm: .slidingWindow, limit: 20, window: window),
            tokens: Limit(algorithm: .slidingWindow, limit: 1_000, window: window))
        for seed in 100...107 as ClosedRange<UInt64> {
            var random = SeededGenerator(seed: seed)
            var admitted: [(time: UInt64, tokens: UInt64)] = []
            for _ in 0..<600 {
                if UInt64.random(in: 0..<4, using: &random) > 0 {
                    clock.advance(by: UInt64.random(in: 0...(5 * second), using: &random))
                }
                let units = UInt64.random(in: 0...200, using: &random)
                let decision = try await store.acquire(
                    AdmissionRequest(key: key("never-\(seed)"), limits: limits, units: units))
                if decision.isAllowed { admitted.append((clock.now(), units)) }
            }
            try require(admitted.count > 40, "seed \(seed): the trace admitted too little to mean anything")
            // The busiest window of length W starts at some admission.
            for (index, start) in admitted.enumerated() {
                var requests: UInt64 = 0
                var tokens: UInt64 = 0
                for entry in admitted[index...] where entry.time < start.time + window {
                    requests += 1
                    tokens += entry.tokens
                }
                try require(requests <= 20 && tokens <= 1_000,
                            "seed \(seed): window from \(start.time) holds \(requests) requests, \(tokens) tokens")
            }
        }
    }

    static func retryIsExact(clock: ManualClock, store: any RateLimitStore) async throws {
        try await probeRetries(clock: clock, store: store, algorithm: .slidingWindow)
    }

    static func gcraRetryIsExact(clock: ManualClock, store: any RateLimitStore) async throws {
        try await probeRetries(clock: clock, store: store, algorithm: .gcra)
    }

    /// Runs random traces; at every denial, asks again 1 ns before the retry time
    /// (must still be denied) and at the retry time (must pass).
    static func probeRetries(clock: ManualClock, store: any RateLimitStore, algorithm: Algorithm) async throws {
        let limits = LimitSet(
            requests: Limit(algorithm: algorithm, limit: 7, window: 60 * second),
            tokens: Limit(algorithm: algorithm, limit: 1_000, window: 60 * second, burst: algorithm == .gcra ? 600 : nil))
        var probes = 0
        for seed in 200...205 as ClosedRange<UInt64> {
            var random = SeededGenerator(seed: seed)
            let request = { (units: UInt64) in
                AdmissionRequest(key: key("retry-\(algorithm)-\(seed)"), limits: limits, units: units)
            }
            for _ in 0..<200 {
                clock.advance(by: UInt64.random(in: 0...(4 * second), using: &random))
                let units = UInt64.random(in: 1...300, using: &random)
                let decision = try await store.acquire(request(units))
                guard !decision.isAllowed, let retry = decision.retryAfter else { continue }
                try require(retry > 0, "a denial with a zero retry time")
                let deniedAt = clock.now()
                clock.set(to: deniedAt + retry - 1)
                let early = try await store.acquire(request(units))
                try require(!early.isAllowed && early.retryAfter == 1,
                            "\(algorithm): 1 ns before the retry time the call got \(early.isAllowed ? "allowed" : "retry \(String(describing: early.retryAfter))")")
                clock.set(to: deniedAt + retry)
                let onTime = try await store.acquire(request(units))
                try require(onTime.isAllowed, "\(algorithm): at the retry time \(retry) ns the call was denied (\(String(describing: onTime.reason)))")
                probes += 1
            }
        }
        try require(probes >= 30, "only \(probes) denials were probed")
    }

    static func gcraBound(clock: ManualClock, store: any RateLimitStore) async throws {
        // A rate that divides its window and one that does not (7 per 10 s, burst 3).
        let cases: [(limit: UInt64, window: UInt64, burst: UInt64)] = [
            (100, 10 * second, 100), (7, 10 * second, 3), (1_000, 60 * second, 250),
        ]
        for (caseIndex, shape) in cases.enumerated() {
            let limits = LimitSet(tokens: Limit(algorithm: .gcra, limit: shape.limit, window: shape.window, burst: shape.burst))
            let fresh = try await store.acquire(
                AdmissionRequest(key: key("burst-\(caseIndex)"), limits: limits, units: shape.burst))
            try require(fresh.isAllowed, "a full bucket must admit the whole burst \(shape.burst)")
            var random = SeededGenerator(seed: 300 + UInt64(caseIndex))
            var admitted: [(time: UInt64, cost: UInt64)] = []
            for _ in 0..<800 {
                clock.advance(by: UInt64.random(in: 0...(shape.window / 8), using: &random))
                let cost = UInt64.random(in: 0...shape.burst, using: &random)
                let decision = try await store.acquire(
                    AdmissionRequest(key: key("gcra-\(caseIndex)"), limits: limits, units: cost))
                if decision.isAllowed { admitted.append((clock.now(), cost)) }
            }
            try require(admitted.count > 50, "case \(caseIndex): too few admissions to mean anything")
            for first in admitted.indices {
                var total: UInt64 = 0
                for last in first..<admitted.count {
                    total += admitted[last].cost
                    let span = admitted[last].time - admitted[first].time
                    // total <= burst + limit * span / window, in integers.
                    try require(
                        total * shape.window <= shape.burst * shape.window + shape.limit * span,
                        "case \(caseIndex): \(total) admitted over \(span) ns exceeds burst \(shape.burst) + rate")
                }
            }
        }
    }

    static func backwardsClock(clock: ManualClock, store: any RateLimitStore) async throws {
        for algorithm in Algorithm.allCases {
            let window = 10 * second
            let limits = LimitSet(requests: Limit(algorithm: algorithm, limit: 4, window: window))
            var random = SeededGenerator(seed: 400)
            var latest = clock.now()
            var admitted: [UInt64] = []
            for _ in 0..<500 {
                if UInt64.random(in: 0..<5, using: &random) == 0 {
                    clock.set(to: clock.now() - UInt64.random(in: 0...second, using: &random))
                } else {
                    clock.advance(by: UInt64.random(in: 0...(2 * second), using: &random))
                }
                latest = max(latest, clock.now())
                let decision = try await store.acquire(AdmissionRequest(key: key("jump-\(algorithm)"), limits: limits))
                // Judge by the latest time seen: real time never went backwards.
                if decision.isAllowed { admitted.append(latest) }
            }
            try require(admitted.count > 20, "\(algorithm): too few admissions")
            for (index, start) in admitted.enumerated() {
                switch algorithm {
                case .slidingWindow:
                    let inWindow = admitted[index...].prefix { $0 < start + window }.count
                    try require(inWindow <= 4, "sliding window: \(inWindow) admitted in one window after clock jumps")
                case .gcra:
                    for (offset, end) in admitted[index...].enumerated() {
                        // offset + 1 admitted over (end - start): at most burst + rate x T.
                        try require(UInt64(offset + 1) * window <= 4 * window + 4 * (end - start),
                                    "gcra: \(offset + 1) admitted over \(end - start) ns after clock jumps")
                    }
                }
            }
        }
    }

    static func statuses(clock: ManualClock, store: any RateLimitStore) async throws {
        let sliding = LimitSet(requests: Limit(algorithm: .slidingWindow, limit: 20, window: 60 * second))
        let first = try await store.acquire(AdmissionRequest(key: key("status"), limits: sliding))
        try require(first.limits.requests == DimensionStatus(limit: 20, remaining: 19, reset: 60 * second),
                    "after one call: \(String(describing: first.limits.requests))")
        clock.advance(by: 10 * second)
        let second = try await store.acquire(AdmissionRequest(key: key("status"), limits: sliding))
        try require(second.limits.requests == DimensionStatus(limit: 20, remaining: 18, reset: 60 * Self.second),
                    "after two calls: \(String(describing: second.limits.requests))")
        let peek = try await store.status(of: key("status"), limits: sliding)
        try require(peek.requests?.remaining == 18, "status consumed or disagreed: \(String(describing: peek.requests))")

        let bucket = LimitSet(tokens: Limit(algorithm: .gcra, limit: 1_000, window: 60 * Self.second))
        let half = try await store.acquire(AdmissionRequest(key: key("bucket"), limits: bucket, units: 500))
        try require(half.limits.tokens == DimensionStatus(limit: 1_000, remaining: 500, reset: 30 * Self.second),
                    "gcra after 500 of 1000: \(String(describing: half.limits.tokens))")
    }
}
