import NIOCore
import Testing
@testable import WeirRedis
import WeirCore

@Suite("RESP coding")
struct RESPCodingTests {
    @Test("decodes every RESP2 type, and nothing until a value is complete")
    func decoding() throws {
        let wire = "+OK\r\n-NOSCRIPT No matching script\r\n:-42\r\n$5\r\nhe\r\nl\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:7\r\n*-1\r\n"
        let expected: [RESPValue] = [
            .simpleString("OK"), .error("NOSCRIPT No matching script"), .integer(-42),
            .bulkString(Array("he\r\nl".utf8)), .bulkString(nil),
            .array([.bulkString(Array("a".utf8)), .array([.integer(7)])]), .array(nil),
        ]
        // Fed one byte at a time: every prefix either yields complete values or waits.
        var buffer = ByteBuffer()
        var decoded: [RESPValue] = []
        for byte in wire.utf8 {
            buffer.writeInteger(byte)
            while let value = try RESPCoding.decode(from: &buffer) { decoded.append(value) }
        }
        #expect(decoded == expected)
        #expect(buffer.readableBytes == 0)
    }

    @Test("rejects bytes that are not RESP")
    func garbage() throws {
        for wire in ["?what\r\n", ":12a\r\n", ":\r\n", ":-\r\n", ":99999999999999999999\r\n", "$-2\r\n", "*x\r\n", "$1\r\nab\r\n"] {
            var buffer = ByteBuffer(string: wire)
            #expect(throws: RESPCoding.ProtocolError.self, "\(wire.debugDescription)") { try RESPCoding.decode(from: &buffer) }
        }
        // The largest and smallest integers Redis can send are read exactly.
        var buffer = ByteBuffer(string: ":9223372036854775807\r\n:-9223372036854775808\r\n")
        #expect(try RESPCoding.decode(from: &buffer) == .integer(.max))
        #expect(try RESPCoding.decode(from: &buffer) == .integer(.min))
        for wire in [":9223372036854775808\r\n", ":-9223372036854775809\r\n"] {
            var buffer = ByteBuffer(string: wire)
            #expect(throws: RESPCoding.ProtocolError.self, "\(wire.debugDescription)") { try RESPCoding.decode(from: &buffer) }
        }
    }

    @Test("encodes commands as arrays of bulk strings, binary-safe")
    func encoding() {
        var buffer = ByteBuffer()
        RESPCoding.encode(["SET", "k", "é\r\n"], into: &buffer)
        #expect(String(buffer: buffer) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\né\r\n\r\n")
        // Empty arguments, multi-digit lengths and counts, appended after what is there.
        let long = String(repeating: "a", count: 1_234)
        RESPCoding.encode([""] + Array(repeating: long, count: 10) + ["x"], into: &buffer)
        let expected = "*12\r\n$0\r\n\r\n" + String(repeating: "$1234\r\n" + long + "\r\n", count: 10) + "$1\r\nx\r\n"
        #expect(String(buffer: buffer) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\né\r\n\r\n" + expected)
        var empty = ByteBuffer()
        RESPCoding.encode([], into: &empty)
        #expect(String(buffer: empty) == "*0\r\n")
    }
}
