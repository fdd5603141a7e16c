import Testing
import WeirConformance

@testable import WeirCore

@Suite("LeaseTable")
struct LeaseTableTests {
    /// Random runs of reserve / insert / settle / forget against a dictionary model:
    /// every slot reads back as the model says, the counts agree, and pages never
    /// outnumber what the held counters span.
    @Test("agrees with a dictionary model", arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
    func model(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        var table = LeaseTable<Int>()
        var model: [UInt64: LeaseTable<Int>.Slot] = [:]
        var held: [UInt64] = []
        for step in 0..<20_000 {
            switch Int.random(in: 0..<11, using: &random) {
            case 0..<4:
                let counter = table.reserve()
                // Some counters go to calls without a record (denials).
                if Bool.random(using: &random) {
                    table.insert(step, at: counter)
                    model[counter] = .active(step)
                    held.append(counter)
                }
            case 4..<6 where !held.isEmpty:
                let counter = held[Int.random(in: 0..<held.count, using: &random)]
                let settled = table.settle(counter)
                if case .active(let value)? = model[counter] {
                    #expect(settled == value)
                    model[counter] = .settled
                } else {
                    #expect(settled == nil)
                }
            case 6..<10 where !held.isEmpty:
                // Mostly the oldest, as TTLs end, sometimes any.
                let index = Bool.random(using: &random) ? 0 : Int.random(in: 0..<held.count, using: &random)
                let counter = held.remove(at: index)
                let previous = table.forget(counter)
                #expect(Self.same(previous, model.removeValue(forKey: counter) ?? .empty))
            default:
                // The sweep's shrink, at any moment: nothing held may change.
                table.shrinkIfSparse()
            }
        }
        for counter in 0..<table.nextCounter {
            #expect(Self.same(table[counter], model[counter] ?? .empty), "counter \(counter)")
        }
        #expect(table.activeCount == model.values.filter { if case .active = $0 { true } else { false } }.count)
        #expect(table.settledCount == model.values.filter { if case .settled = $0 { true } else { false } }.count)
        let spanned = Set(held.map { $0 / UInt64(LeaseTable<Int>.pageSize) })
        #expect(table.pageCount <= spanned.count + 1, "a page with nothing held is freed once complete")
        #expect(!table.wasIssued(table.nextCounter))
    }

    @Test("frees every page once all is forgotten, whether or not counters had records")
    func freesPages() {
        var table = LeaseTable<String>()
        var counters: [UInt64] = []
        for index in 0..<5_000 {
            let counter = table.reserve()
            if index % 3 == 0 { table.insert("lease \(index)", at: counter); counters.append(counter) }
        }
        #expect(table.pageCount == (5_000 + LeaseTable<String>.pageSize - 1) / LeaseTable<String>.pageSize)
        for counter in counters { table.forget(counter) }
        #expect(table.pageCount == 1, "the page still being issued stays")
        for _ in 0..<LeaseTable<String>.pageSize { _ = table.reserve() }
        #expect(table.pageCount == 0)
        #expect(table.activeCount == 0 && table.settledCount == 0)
        #expect(table.settle(counters[0]) == nil)
        // The pool keeps its high-water mark and reuses it.
        let capacity = table.poolCapacity
        #expect(capacity >= counters.count)
        for index in 0..<counters.count { table.insert("again \(index)", at: table.reserve()) }
        #expect(table.poolCapacity == capacity)
        table.shrinkIfSparse()
        #expect(table.poolCapacity == capacity, "records are active: the pool stays")
    }

    @Test("gives its record pool back once nothing is active, and works on after")
    func shrinksPool() {
        var table = LeaseTable<String>()
        let counters = (0..<5_000).map { index in
            let counter = table.reserve()
            table.insert("lease \(index)", at: counter)
            return counter
        }
        for counter in counters.dropLast() { table.forget(counter) }
        table.shrinkIfSparse()
        #expect(table.poolCapacity > 0, "one record is still active")
        #expect(table.settle(counters.last!) == "lease 4999")
        table.shrinkIfSparse()
        #expect(table.poolCapacity == 0)
        let next = table.reserve()
        table.insert("after", at: next)
        #expect(table.settle(next) == "after")
        #expect(table.activeCount == 0 && table.settledCount == 2)
    }

    private static func same(_ a: LeaseTable<Int>.Slot, _ b: LeaseTable<Int>.Slot) -> Bool {
        switch (a, b) {
        case (.empty, .empty), (.settled, .settled): true
        case (.active(let x), .active(let y)): x == y
        default: false
        }
    }
}
