import HTTPTypes
import Hummingbird

/// The dashboard page: HTML, CSS and JavaScript kept as files in `Page/` and embedded in
/// the binary when it is built (SwiftPM's `embedInCode`), so `weir serve` needs no file
/// at run time and the page no network beyond its own server (it works offline).
///
/// The page asks for the admin token in a form (never a URL parameter: the form posts
/// nowhere, the script takes the value), keeps it in `sessionStorage` (gone when the
/// browser tab closes) and sends it as `Authorization: Bearer` with `fetch`, the usage
/// stream included (`EventSource` cannot send headers, so the stream is read from a
/// `fetch` body). Everything shown is built with DOM calls and `textContent`: an
/// account id is never parsed as HTML.
///
/// The CSP allows scripts and styles from this server only (`/dashboard/app.js`,
/// `/dashboard/app.css`), no inline script, no form submission, no framing.
enum DashboardPage {
    /// Security headers on every dashboard asset.
    static func response(body: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-store"
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// `Page/index.html`.
    static let html = String(decoding: PackageResources.index_html, as: UTF8.self)
    /// `Page/app.css`.
    static let style = String(decoding: PackageResources.app_css, as: UTF8.self)
    /// `Page/app.js`.
    static let script = String(decoding: PackageResources.app_js, as: UTF8.self)
}
