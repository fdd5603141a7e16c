/// A value that is either here now or comes later: what the `Limiter` answers with.
///
/// With the in-memory store every answer is `.ready`: the caller writes it at once, on
/// its own thread, with no closure, task or hop made for it. With Redis it is `.later`:
/// the caller hands `wait` a completion, which is called exactly once, from the store's
/// task. One path serves both: callers switch on the case, and `map` carries a
/// transformation through either.
public enum Pending<Value: Sendable>: Sendable {
    case ready(Value)
    /// Starts the wait; `completion` is called exactly once with the value.
    case later(_ wait: @Sendable (_ completion: @escaping @Sendable (Value) -> Void) -> Void)

    /// `transform` of the value: applied at once to a ready value, on arrival to a later one.
    @inlinable
    public func map<Other: Sendable>(_ transform: @escaping @Sendable (Value) -> Other) -> Pending<Other> {
        switch self {
        case .ready(let value): .ready(transform(value))
        case .later(let wait): .later { completion in wait { completion(transform($0)) } }
        }
    }

    /// The pending value `next` makes of this one's value: at once for a ready value
    /// that `next` answers at once, else when both have come.
    @inlinable
    public func flatMap<Other: Sendable>(_ next: @escaping @Sendable (Value) -> Pending<Other>) -> Pending<Other> {
        switch self {
        case .ready(let value):
            return next(value)
        case .later(let wait):
            return .later { completion in
                wait { value in
                    switch next(value) {
                    case .ready(let other): completion(other)
                    case .later(let rest): rest(completion)
                    }
                }
            }
        }
    }

    /// The value, awaited: at once when ready, else when the wait completes.
    public var value: Value {
        get async {
            switch self {
            case .ready(let value): value
            case .later(let wait): await withCheckedContinuation { done in wait { done.resume(returning: $0) } }
            }
        }
    }
}
