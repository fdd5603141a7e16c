/// Splits a `text/event-stream` body into events as its bytes arrive (the WHATWG
/// server-sent events grammar: lines end with CRLF, LF or CR; a blank line ends an
/// event; `data:` lines are joined with LF, one space after the colon dropped).
///
/// Each event keeps its exact bytes, blank line included, so that a proxy forwards
/// what it received unchanged. Bytes of an event not yet ended stay pending; nothing
/// else is held, so memory is bounded by the largest single event.
///
/// A value, used by one task.
struct SSEParser: Sendable {
    /// One complete event.
    struct Event: Sendable, Equatable {
        /// The event's bytes as received, its terminating blank line included.
        var raw: [UInt8]
        /// Its `data` lines joined with LF; nil when it has none (a comment, a keep-alive).
        var data: [UInt8]?
    }

    private var pending: [UInt8] = []
    /// Where the next unread line starts in `pending`.
    private var lineStart = 0
    /// The data of the event being read.
    private var data: [UInt8]? = nil

    init() {}

    /// The bytes of an event still incomplete.
    var pendingBytes: [UInt8] { pending }

    /// Feeds `bytes`; returns the events they complete, in order.
    mutating func feed(_ bytes: some Collection<UInt8>) -> [Event] {
        pending.append(contentsOf: bytes)
        var events: [Event] = []
        var index = lineStart
        while index < pending.count {
            let byte = pending[index]
            guard byte == 0x0A || byte == 0x0D else {
                index += 1
                continue
            }
            var next = index + 1
            if byte == 0x0D {
                // CR may be followed by LF in the next chunk: wait for it.
                guard next < pending.count else { break }
                if pending[next] == 0x0A { next += 1 }
            }
            if let event = endLine(contentEnd: index, next: next) { events.append(event) }
            index = lineStart
        }
        return events
    }

    /// Handles the line from `lineStart` to `contentEnd`, whose terminator ends at
    /// `next`; returns the event a blank line completes.
    private mutating func endLine(contentEnd: Int, next: Int) -> Event? {
        let line = pending[lineStart..<contentEnd]
        lineStart = next
        if line.isEmpty {
            let event = Event(raw: Array(pending[0..<next]), data: data)
            pending.removeFirst(next)
            lineStart = 0
            data = nil
            return event
        }
        if line.starts(with: Self.dataField) {
            var value = line.dropFirst(Self.dataField.count)
            if value.first == 0x20 { value = value.dropFirst() }
            if data == nil {
                data = Array(value)
            } else {
                data!.append(0x0A)
                data!.append(contentsOf: value)
            }
        } else if line.elementsEqual(Self.dataName) {
            if data == nil { data = [] } else { data!.append(0x0A) }
        }
        return nil
    }

    /// `data:`
    private static let dataField: [UInt8] = Array("data:".utf8)
    /// `data` alone on a line: a data line with an empty value.
    private static let dataName: [UInt8] = Array("data".utf8)
}
