import HTTPTypes
import Hummingbird

/// The API's contract: `Contract/openapi.json`, an OpenAPI 3.1 description of the
/// decision API, the admin API and the operations endpoints, with every status code and
/// error body. It is the one description of those calls: `weir serve` serves it at
/// `GET /openapi.json`, the contract test runs schemathesis against a running server
/// from it (memory and Redis), and a test checks that the README lists exactly its
/// operations. Embedded in the binary when it is built (SwiftPM's `embedInCode`).
///
/// It also says which methods each path has, so a call with another method on a known
/// path is answered 405 with `Allow` (`UnmatchedRouteMiddleware`), from the same list
/// the contract publishes.
enum APIContract {
    /// `openapi.json`, as built in.
    static let document = PackageResources.openapi_json

    /// The contract's paths, as segments (`{id}` matches any one segment), with their
    /// methods, upper case.
    static let paths: [(segments: [Substring], methods: [String])] = {
        guard case .object(let members)? = (try? JSONParser.parse(document))?["paths"] else { return [] }
        let verbs = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
        return members.map { path, item in
            let methods = verbs.filter { item[$0] != nil }.map { $0.uppercased() }
            return (path.split(separator: "/"), methods)
        }
    }()

    /// The methods the contract gives `path` (a request path, without query), or nil
    /// when the contract has no such path.
    static func methods(forPath path: String) -> [String]? {
        let segments = path.split(separator: "/")
        for entry in paths where entry.segments.count == segments.count {
            let matches = zip(entry.segments, segments).allSatisfy { pattern, segment in
                pattern == segment || (pattern.hasPrefix("{") && pattern.hasSuffix("}"))
            }
            if matches { return entry.methods }
        }
        return nil
    }

    static func response() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: document)))
    }
}

extension WeirService {
    func addContractRoutes(to router: Router<BasicRequestContext>) {
        router.get("/openapi.json") { _, _ in APIContract.response() }
    }
}
