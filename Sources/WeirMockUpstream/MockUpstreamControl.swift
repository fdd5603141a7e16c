import Synchronization

/// What a test sees of, and does to, a mock upstream running in its process: the
/// requests it received, the calls in flight, and a gate that holds calls.
///
/// Concurrency: thread-safe (`Mutex`, atomics).
public final class MockUpstreamControl: Sendable {
    /// One request as the mock received it.
    public struct Received: Sendable {
        /// The request target: its path, and its query if any.
        public var path: String
        /// Header names lowercased; repeated headers joined with ", ".
        public var headers: [String: String]
        public var body: [UInt8]
    }

    private let received = Mutex<[Received]>([])
    private let held = Atomic<Bool>(false)
    private let inFlight = Atomic<Int>(0)
    private let abandoned = Atomic<Int>(0)
    private let requests = Atomic<Int>(0)

    private let recording: Bool
    private let changed = Mutex<(@Sendable () -> Void)?>(nil)

    /// - Parameter recording: keep the requests received (`requestsReceived`); off for
    ///   benchmarks.
    public init(recording: Bool = true) {
        self.recording = recording
    }

    /// Every request received, in order (at most the last 10,000).
    public var requestsReceived: [Received] { received.withLock { $0 } }

    /// Requests received in all.
    public var requestCount: Int { requests.load(ordering: .relaxed) }

    /// While held, music generations and `x-mock-hold` waits do not end (up to
    /// 60 s) until `release()`.
    public func hold() { held.store(true, ordering: .releasing) }

    /// Lets held calls finish.
    public func release() { held.store(false, ordering: .releasing) }

    public var isHeld: Bool { held.load(ordering: .acquiring) }

    /// Calls whose answer is still being produced (music generations, streams).
    public var callsInFlight: Int { inFlight.load(ordering: .acquiring) }

    /// Streams that ended because the other side went away (a write failed).
    public var abandonedStreams: Int { abandoned.load(ordering: .acquiring) }

    func record(_ request: Received) -> Int {
        if recording {
            received.withLock { list in
                if list.count >= 10_000 { list.removeFirst(list.count - 9_999) }
                list.append(request)
            }
        }
        return requests.add(1, ordering: .relaxed).newValue
    }

    /// Calls `body` after each change of `callsInFlight` or `abandonedStreams` (on the
    /// mock's thread), so a test waits on these events rather than polling.
    public func onChange(_ body: @escaping @Sendable () -> Void) {
        changed.withLock { $0 = body }
    }

    func began() {
        inFlight.add(1, ordering: .acquiringAndReleasing)
        notify()
    }
    func ended() {
        inFlight.subtract(1, ordering: .acquiringAndReleasing)
        notify()
    }
    func abandon() {
        abandoned.add(1, ordering: .acquiringAndReleasing)
        notify()
    }
    private func notify() { changed.withLock { $0 }?() }
}
