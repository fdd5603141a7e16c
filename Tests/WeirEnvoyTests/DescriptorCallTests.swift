import Testing
import WeirEnvoy

@Suite("Envoy descriptors read as Weir calls")
struct DescriptorCallTests {
    typealias Entries = [(key: String, value: String)]

    func read(_ entries: Entries, descriptorHits: UInt64? = nil, requestHits: UInt32 = 0, negative: Bool = false)
        -> Result<DescriptorCall, UnknownDescriptorReason>
    {
        DescriptorCall.read(entries: entries, descriptorHits: descriptorHits, requestHits: requestHits, negativeHits: negative)
    }

    @Test("api_key, api and model make a call; a Bearer prefix and other entries are dropped")
    func apiKeyCall() throws {
        let call = try read([("generic_key", "x"), ("api_key", "Bearer sk-123"), ("api", "text"), ("model", "MiniMax-M2")]).get()
        #expect(call == DescriptorCall(identity: .apiKey("sk-123"), api: "text", model: "MiniMax-M2", charge: .call, units: 0))
        #expect(try read([("api_key", "bearer  sk-9 "), ("api", "text")]).get().identity == .apiKey("sk-9"))
        #expect(try read([("api_key", "sk-raw"), ("api", "text")]).get().identity == .apiKey("sk-raw"))
    }

    @Test("an account names the budget directly; no model is the empty model")
    func accountCall() throws {
        let call = try read([("account", "acme"), ("api", "voice-cloning")]).get()
        #expect(call.identity == .account("acme"))
        #expect(call.model == "")
        #expect(call.charge == .call)
    }

    @Test("units: the descriptor's hits_addend, else the request's, else 0")
    func units() throws {
        let entries: Entries = [("account", "a"), ("api", "text"), ("model", "MiniMax-M2")]
        #expect(try read(entries).get().units == 0)
        #expect(try read(entries, requestHits: 300).get().units == 300)
        #expect(try read(entries, descriptorHits: 5_000_000_000, requestHits: 300).get().units == 5_000_000_000)
        #expect(try read(entries, descriptorHits: 0, requestHits: 300).get().units == 0)
    }

    @Test("charge=usage reports units after the call; another charge value is refused")
    func charge() throws {
        let usage = try read([("account", "a"), ("api", "text"), ("charge", "usage")], descriptorHits: 42).get()
        #expect(usage.charge == .usage)
        #expect(usage.units == 42)
        #expect(try read([("account", "a"), ("api", "text"), ("charge", "call")]).get().charge == .call)
        #expect(read([("account", "a"), ("api", "text"), ("charge", "refund")]) == .failure(.badCharge))
    }

    @Test("descriptors that name no call say why")
    func unknown() {
        #expect(read([("generic_key", "x")]) == .failure(.noIdentity))
        #expect(read([("api", "text")]) == .failure(.noIdentity))
        #expect(read([("api_key", "Bearer "), ("api", "text")]) == .failure(.noIdentity))
        #expect(read([("account", "a"), ("api_key", "k"), ("api", "text")]) == .failure(.bothIdentities))
        #expect(read([("account", "a")]) == .failure(.noAPI))
        #expect(read([("account", "a"), ("api", "")]) == .failure(.noAPI))
        #expect(read([("account", "a"), ("api", "text"), ("api", "t2a")]) == .failure(.duplicateEntry))
        #expect(read([("account", String(repeating: "x", count: 257)), ("api", "text")]) == .failure(.badAccount))
        #expect(read([("account", "bad\u{1}id"), ("api", "text")]) == .failure(.badAccount))
        #expect(read([("account", "a"), ("api", "text")], descriptorHits: 5, negative: true) == .failure(.negativeHits))
    }
}
