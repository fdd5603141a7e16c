import NIOCore
import NIOHTTP1
import Testing
@testable import WeirServer

/// The connection state machine of the decision server, driven event by event without
/// sockets: what is decided, forwarded, queued, refused and in what order.
@Suite("DecisionConnection state machine")
struct DecisionConnectionTests {
    enum Route: Equatable { case decision, gateway }

    static func machine(maxBodySize: Int = 16) -> DecisionConnection<Route> {
        DecisionConnection(maxBodySize: maxBodySize, allocator: ByteBufferAllocator())
    }

    static func head(_ uri: String, method: HTTPMethod = .POST, length: Int? = nil) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        if let length { head.headers.add(name: "content-length", value: String(length)) }
        return head
    }

    static func route(_ head: HTTPRequestHead) -> Route? {
        switch head.uri {
        case "/v1/acquire": .decision
        case "/gw": .gateway
        default: nil
        }
    }

    /// A short description of an action, to compare sequences.
    static func describe(_ action: DecisionConnection<Route>.Action) -> String {
        switch action {
        case .none: "none"
        case .forward(.head(let head)): "forward head \(head.uri)"
        case .forward(.body(let body)): "forward body \(String(buffer: body))"
        case .forward(.end): "forward end"
        case .refuseTooLarge(let route, let head): "413 \(route) \(head.uri)"
        case .refuseHeaders(let head): "431 \(head.uri)"
        case .decide(let route, let head, let body): "decide \(route) \(head.uri) \(String(buffer: body))"
        }
    }

    static func feed(_ machine: inout DecisionConnection<Route>, _ parts: [HTTPServerRequestPart]) -> [String] {
        parts.map { describe(machine.read($0, route: Self.route)) }
    }

    static func body(_ text: String) -> HTTPServerRequestPart { .body(ByteBuffer(string: text)) }

    @Test("a decision request is collected whole and decided; what arrives meanwhile waits and is read again in order")
    func collectDecideQueue() {
        var machine = Self.machine()
        let first = Self.feed(&machine, [.head(Self.head("/v1/acquire")), Self.body("{\"a\":"), Self.body("1}"), .end(nil)])
        #expect(first == ["none", "none", "none", "decide decision /v1/acquire {\"a\":1}"])
        #expect(machine.isWaiting)
        // Pipelined behind it: a forwarded request and another decision, all queued.
        let queued = Self.feed(&machine, [.head(Self.head("/healthz", method: .GET)), .end(nil), .head(Self.head("/v1/acquire")), Self.body("{}"), .end(nil)])
        #expect(queued == ["none", "none", "none", "none", "none"])
        #expect(machine.nextQueued() == nil, "nothing is read again while the decision is in flight")
        machine.answered()
        var replayed: [String] = []
        while let part = machine.nextQueued() {
            replayed.append(Self.describe(machine.read(part, route: Self.route)))
        }
        // The forwarded request goes on; the decision behind it is held until Hummingbird
        // has answered the first one (answers leave in order).
        #expect(replayed == ["forward head /healthz", "forward end", "none"])
        #expect(machine.forwarded == 1)
        #expect(machine.nextQueued() == nil, "nothing is read again while a request is held")
        let more = Self.feed(&machine, [.head(Self.head("/v1/acquire")), .end(nil)])
        #expect(more == ["none", "none"], "what arrives behind a held request is queued")
        let goesOn = machine.forwardedResponseEnded()
        #expect(goesOn, "the held request may go on")
        replayed = []
        while let part = machine.nextQueued() { replayed.append(Self.describe(machine.read(part, route: Self.route))) }
        #expect(replayed == ["none", "none", "decide decision /v1/acquire {}"])
        machine.answered()
        replayed = []
        while let part = machine.nextQueued() { replayed.append(Self.describe(machine.read(part, route: Self.route))) }
        #expect(replayed == ["none", "decide decision /v1/acquire "])
    }

    @Test("a decision stops the replay; the parts after it wait for its answer")
    func replayStopsAtDecision() {
        var machine = Self.machine()
        _ = Self.feed(&machine, [.head(Self.head("/v1/acquire")), .end(nil)])
        _ = Self.feed(&machine, [.head(Self.head("/v1/acquire")), Self.body("2"), .end(nil), .head(Self.head("/v1/acquire")), Self.body("3"), .end(nil)])
        machine.answered()
        var replayed: [String] = []
        while let part = machine.nextQueued() { replayed.append(Self.describe(machine.read(part, route: Self.route))) }
        #expect(replayed == ["none", "none", "decide decision /v1/acquire 2"])
        #expect(machine.hasQueued)
        machine.answered()
        replayed = []
        while let part = machine.nextQueued() { replayed.append(Self.describe(machine.read(part, route: Self.route))) }
        #expect(replayed == ["none", "none", "decide decision /v1/acquire 3"])
        #expect(!machine.hasQueued)
    }

    @Test("a body over the limit: 413 and close (everything after dropped), for decisions and gateway calls alike")
    func oversized() {
        var declared = Self.machine()
        #expect(Self.feed(&declared, [.head(Self.head("/v1/acquire", length: 17)), Self.body("x"), .end(nil), .head(Self.head("/v1/acquire")), .end(nil)])
            == ["413 decision /v1/acquire", "none", "none", "none", "none"])

        var found = Self.machine()
        #expect(Self.feed(&found, [.head(Self.head("/v1/acquire")), Self.body("0123456789"), Self.body("0123456789")])
            == ["none", "none", "413 decision /v1/acquire"])

        var gateway = Self.machine()
        #expect(Self.feed(&gateway, [.head(Self.head("/gw")), Self.body("0123456789"), Self.body("0123456789"), .end(nil)])
            == ["none", "none", "413 gateway /gw", "none"])
        var declaredGateway = Self.machine()
        #expect(Self.feed(&declaredGateway, [.head(Self.head("/gw", length: 100)), Self.body("x"), .end(nil)])
            == ["413 gateway /gw", "none", "none"])
    }

    @Test("a head over the header limits: 431 and close, whatever its route; one at the limits goes on")
    func headerBounds() {
        let limits = ConnectionLimits(maxHeaderCount: 3, maxHeaderBytes: 40)
        func head(_ uri: String, _ fields: [(String, String)], method: HTTPMethod = .POST) -> HTTPServerRequestPart {
            .head(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(fields)))
        }
        var many = DecisionConnection<Route>(maxBodySize: 16, limits: limits, allocator: ByteBufferAllocator())
        #expect(Self.feed(&many, [head("/v1/acquire", [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]), .end(nil), head("/v1/acquire", []), .end(nil)])
            == ["431 /v1/acquire", "none", "none", "none"])
        var long = DecisionConnection<Route>(maxBodySize: 16, limits: limits, allocator: ByteBufferAllocator())
        #expect(Self.feed(&long, [head("/healthz", [("cookie", String(repeating: "x", count: 35))], method: .GET), .end(nil)])
            == ["431 /healthz", "none"])
        var fits = DecisionConnection<Route>(maxBodySize: 16, limits: limits, allocator: ByteBufferAllocator())
        #expect(Self.feed(&fits, [head("/v1/acquire", [("a", "1"), ("b", "2"), ("cookie", String(repeating: "x", count: 30))]), .end(nil)])
            == ["none", "decide decision /v1/acquire "])
    }

    @Test("only POST on a fast-path route is decided here")
    func methodsAndPaths() {
        var machine = Self.machine()
        #expect(Self.feed(&machine, [.head(Self.head("/v1/acquire", method: .GET)), .end(nil)]) == ["forward head /v1/acquire", "forward end"])
        let held = machine.forwardedResponseEnded()
        #expect(!held, "no request was held")
        #expect(Self.feed(&machine, [.head(Self.head("/admin")), Self.body("{}"), .end(nil)]) == ["forward head /admin", "forward body {}", "forward end"])
    }

    @Test("an answer Hummingbird writes of its own accord does not push the count below zero")
    func strayResponseEnd() {
        var machine = Self.machine()
        let held = machine.forwardedResponseEnded()
        #expect(!held)
        #expect(machine.forwarded == 0)
        #expect(Self.feed(&machine, [.head(Self.head("/v1/acquire")), .end(nil)]) == ["none", "decide decision /v1/acquire "])
    }

    /// A client pipelining without end behind a call in flight: the queue reports full
    /// once it holds `maxQueuedBytes` (the handler then stops reading the socket), never
    /// holds more than one part beyond it, and as it drains it reports room again, down
    /// to nothing held. Every queued request is still read again, in order.
    @Test("parts queued behind a call in flight are bounded by maxQueuedBytes, and drain back to zero")
    func queueBound() {
        let limit = 4_096
        var machine = DecisionConnection<Route>(
            maxBodySize: 64, limits: ConnectionLimits(maxQueuedBytes: limit), allocator: ByteBufferAllocator())
        _ = Self.feed(&machine, [.head(Self.head("/v1/acquire")), Self.body("{}"), .end(nil)])
        #expect(machine.isWaiting)
        var sent = 0
        var largestPart = 0
        // The handler reads while the queue is not full: the loop is its reads.
        while !machine.queueIsFull, sent < 10_000 {
            let body = "{\"n\":\(sent)}"
            for part in [HTTPServerRequestPart.head(Self.head("/v1/acquire", length: body.utf8.count)), Self.body(body), .end(nil)] {
                let before = machine.queuedBytes
                #expect(Self.describe(machine.read(part, route: Self.route)) == "none")
                largestPart = max(largestPart, machine.queuedBytes - before)
            }
            sent += 1
        }
        #expect(machine.queueIsFull, "a full queue is reported")
        #expect(sent > 10, "a few requests fit: \(sent)")
        #expect(machine.queuedBytes >= limit && machine.queuedBytes < limit + 3 * largestPart,
                "held \(machine.queuedBytes) bytes for a limit of \(limit)")
        // The call in flight is answered; the queued requests are read again, one decision
        // at a time, and the queue reports room before it is empty.
        machine.answered()
        var decided: [String] = []
        var roomAt: Int?
        while let part = machine.nextQueued() {
            if roomAt == nil, !machine.queueIsFull { roomAt = decided.count }
            if case .decide(_, _, let body) = machine.read(part, route: Self.route) {
                decided.append(String(buffer: body))
                machine.answered()
            }
        }
        #expect(roomAt == 0, "one part read again makes room")
        #expect(decided == (0..<sent).map { "{\"n\":\($0)}" }, "every request in order")
        #expect(machine.queuedBytes == 0 && !machine.queueIsFull && machine.isQuiet)
    }
}
