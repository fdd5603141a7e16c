/// Envoy configurations for the tests: the README's example (one route per API path,
/// descriptors `api_key` from `Authorization`, `api` by route, `model` from a header,
/// and a `charge: usage` descriptor sent when the response is done with the tokens the
/// upstream reported), on 127.0.0.1 and ports the tests choose.
enum EnvoyConfig {
    /// A listener named `name` whose rate limit filter asks Weir (`failureModeDeny`
    /// as given) and routes to the `upstream` cluster.
    static func listener(name: String, failureModeDeny: Bool, domain: String = "weir") -> String {
        """
          - name: \(name)
            address: {socket_address: {address: 127.0.0.1, port_value: 0}}
            filter_chains:
            - filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: \(name)
                  route_config:
                    virtual_hosts:
                    - name: api
                      domains: ["*"]
                      routes:
                      - match: {prefix: /v1/text/chatcompletion_v2}
                        route:
                          cluster: upstream
                          rate_limits:
                          - actions:
                            - request_headers: {header_name: authorization, descriptor_key: api_key}
                            - generic_key: {descriptor_key: api, descriptor_value: text}
                            - request_headers: {header_name: x-weir-model, descriptor_key: model}
                          - apply_on_stream_done: true
                            hits_addend: {format: "%RESP(x-usage-total-tokens)%"}
                            actions:
                            - request_headers: {header_name: authorization, descriptor_key: api_key}
                            - generic_key: {descriptor_key: api, descriptor_value: text}
                            - request_headers: {header_name: x-weir-model, descriptor_key: model}
                            - generic_key: {descriptor_key: charge, descriptor_value: usage}
                  http_filters:
                  - name: envoy.filters.http.ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
                      domain: \(domain)
                      timeout: 5s
                      failure_mode_deny: \(failureModeDeny)
                      rate_limit_service:
                        transport_api_version: V3
                        grpc_service: {envoy_grpc: {cluster_name: weir}}
                  - name: envoy.filters.http.router
                    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}

        """
    }

    /// The whole config: admin on a free port, `listeners`, the upstream cluster at
    /// `upstreamPort` and Weir's gRPC service at `weirPort` (HTTP/2).
    static func config(listeners: [String], upstreamPort: Int, weirPort: Int) -> String {
        """
        admin:
          address: {socket_address: {address: 127.0.0.1, port_value: 0}}
        static_resources:
          listeners:
        \(listeners.joined())
          clusters:
          - name: upstream
            type: STATIC
            connect_timeout: 1s
            load_assignment:
              cluster_name: upstream
              endpoints:
              - lb_endpoints:
                - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: \(upstreamPort)}}}
          - name: weir
            type: STATIC
            connect_timeout: 1s
            typed_extension_protocol_options:
              envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                explicit_http_config: {http2_protocol_options: {}}
            load_assignment:
              cluster_name: weir
              endpoints:
              - lb_endpoints:
                - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: \(weirPort)}}}

        """
    }
}
