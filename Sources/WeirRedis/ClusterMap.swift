import WeirCore

/// Which node of a Redis Cluster serves each of the 16384 hash slots, as `CLUSTER SLOTS`
/// reports it (masters only: Weir reads and writes on the masters).
///
/// A value: the client replaces its map as a whole when it learns a new one, and patches
/// one slot when a `MOVED` names its new owner.
struct ClusterMap: Sendable {
    static let slotCount = 16_384

    /// Endpoints (`host:port`) of the masters, indexed by `owners`.
    private(set) var nodes: [String]
    /// The index in `nodes` of each slot's master, or -1 when no node serves it.
    private var owners: [Int16]

    init() {
        nodes = []
        owners = Array(repeating: -1, count: Self.slotCount)
    }

    /// The map in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replicas...], ...]`.
    /// A master announced with an empty host (or `?`) is reached at `defaultHost`.
    init(slotsReply reply: RESPValue, defaultHost: String) throws {
        self.init()
        guard case .array(let ranges?) = reply else { throw Self.malformed(reply) }
        for range in ranges {
            guard case .array(let fields?) = range, fields.count >= 3,
                  case .integer(let start) = fields[0], case .integer(let end) = fields[1],
                  case .array(let master?) = fields[2], master.count >= 2,
                  let host = master[0].string, case .integer(let port) = master[1],
                  0 <= start, start <= end, end < Self.slotCount
            else { throw Self.malformed(range) }
            let name = RedisNode.endpoint(host: host.isEmpty || host == "?" ? defaultHost : host, port: Int(port))
            for slot in Int(start)...Int(end) { assign(slot, to: name) }
        }
    }

    /// Whether every slot has a known master (a map read whole from a healthy cluster; not
    /// one patched slot by slot from `MOVED` replies alone).
    var isComplete: Bool { !owners.contains(-1) }

    /// The endpoint of the master serving `slot`, if the map knows one.
    func node(for slot: Int) -> String? {
        let index = owners[slot]
        return index < 0 ? nil : nodes[Int(index)]
    }

    /// Records that `node` serves `slot` (after a `MOVED`).
    mutating func assign(_ slot: Int, to node: String) {
        if let index = nodes.firstIndex(of: node) {
            owners[slot] = Int16(index)
        } else {
            nodes.append(node)
            owners[slot] = Int16(nodes.count - 1)
        }
    }

    private static func malformed(_ value: RESPValue) -> StoreError {
        StoreError("redis: unexpected CLUSTER SLOTS reply \(value)", isTransient: true)
    }
}

/// Redis Cluster's key-to-slot function: CRC16 (XMODEM) of the key, or of its hash tag
/// (the text between the first `{` and the next `}`, when not empty), modulo 16384.
enum HashSlot {
    static func slot(of key: String) -> Int {
        let bytes = Array(key.utf8)
        var hashed = bytes[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
           let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            hashed = bytes[(open + 1)..<close]
        }
        return Int(crc16(hashed) & 0x3FFF)
    }

    /// CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection.
    static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }

    /// The slot every key of `command` hashes to; nil for a command without keys.
    /// - Throws: `StoreError` (permanent) when its keys hash to different slots.
    static func slot(of command: [String]) throws -> Int? {
        var slot: Int?
        for key in keys(of: command) {
            let next = Self.slot(of: key)
            if let slot, slot != next {
                throw StoreError("redis: keys of one command in different cluster slots: \(command.prefix(1))", isTransient: false)
            }
            slot = next
        }
        return slot
    }

    /// The keys of the commands Weir sends: `EVAL`/`EVALSHA` (`numkeys` keys), no key for
    /// server commands, else the first argument.
    static func keys(of command: [String]) -> ArraySlice<String> {
        guard let name = command.first?.uppercased() else { return [] }
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard command.count >= 3, let count = Int(command[2]), count >= 0, command.count >= 3 + count else { return [] }
            return command[3..<(3 + count)]
        case "PING", "ECHO", "SCRIPT", "CLUSTER", "INFO", "TIME", "SELECT", "ASKING", "READONLY", "FLUSHALL",
             "FLUSHDB", "DBSIZE", "KEYS", "SCAN", "CONFIG", "CLIENT", "COMMAND", "FUNCTION", "HELLO", "AUTH",
             "MULTI", "EXEC", "DISCARD", "WAIT", "SAVE", "BGSAVE", "BGREWRITEAOF", "LASTSAVE", "DEBUG", "MEMORY",
             "SLOWLOG", "LATENCY", "ROLE", "REPLICAOF", "SHUTDOWN", "MIGRATE", "OBJECT", "RANDOMKEY", "QUIT", "RESET":
            return []
        default:
            return command.count >= 2 ? command[1...1] : []
        }
    }
}

/// A `MOVED` or `ASK` error reply: the slot is served by (or being imported into) another node.
struct ClusterRedirect: Sendable, Equatable {
    enum Kind: Sendable { case moved, ask }

    var kind: Kind
    var slot: Int
    /// `host:port` of the node to ask.
    var endpoint: String
    var host: String
    var port: Int

    /// Parses `MOVED 3999 127.0.0.1:6381` or `ASK 3999 127.0.0.1:6381`; nil for any other reply.
    init?(_ reply: RESPValue) {
        guard let message = reply.errorMessage else { return nil }
        let parts = message.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), slot >= 0, slot < ClusterMap.slotCount,
              let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...])
        else { return nil }
        switch parts[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        self.slot = slot
        self.host = String(parts[2][..<colon])
        self.port = port
        self.endpoint = RedisNode.endpoint(host: host, port: port)
    }
}
