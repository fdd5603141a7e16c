// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "weir",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "WeirCore", targets: ["WeirCore"]),
        .library(name: "WeirPolicy", targets: ["WeirPolicy"]),
        .library(name: "WeirConformance", targets: ["WeirConformance"]),
        .library(name: "WeirServer", targets: ["WeirServer"]),
        .library(name: "WeirHummingbird", targets: ["WeirHummingbird"]),
        .library(name: "WeirAnswers", targets: ["WeirAnswers"]),
        .library(name: "WeirRedis", targets: ["WeirRedis"]),
        .library(name: "WeirEnvoy", targets: ["WeirEnvoy"]),
        .executable(name: "weir", targets: ["weir"]),
        .executable(name: "weir-bench", targets: ["weir-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-http-structured-headers.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        // The Envoy rate limit service (WeirEnvoy): gRPC over HTTP/2 and protobuf.
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // The engine: clock, algorithms, decisions, leases, stores. Standard library only.
        .target(name: "WeirCore"),
        // The catalogue: YAML, validation, the built-in table, resolution.
        .target(
            name: "WeirPolicy",
            dependencies: ["WeirCore", .product(name: "Yams", package: "Yams")]
        ),
        // The checks every RateLimitStore must pass; used by each store's tests.
        .target(name: "WeirConformance", dependencies: ["WeirCore"]),
        // The command line: catalogue, check-config, simulate.
        .target(
            name: "WeirCommands",
            dependencies: [
                "WeirCore", "WeirPolicy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                "WeirServer", "WeirEnvoy", "WeirMockUpstream",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // How answers read, for every shape and without an HTTP server: the rate limit
        // headers both families of clients read, a refusal's message, JSON writing.
        .target(
            name: "WeirAnswers",
            dependencies: [
                "WeirCore", "WeirPolicy",
                .product(name: "RawStructuredFieldValues", package: "swift-http-structured-headers"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
        // A Hummingbird middleware enforcing Weir's limits in process.
        .target(
            name: "WeirHummingbird",
            dependencies: [
                "WeirCore", "WeirPolicy", "WeirAnswers",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
        // `weir serve`: decision, admin and operations routes; the registry in SQLite.
        .target(
            name: "WeirServer",
            dependencies: [
                "WeirCore", "WeirPolicy", "WeirAnswers", "WeirRedis", "WeirEnvoy",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            // The dashboard's page and the API's OpenAPI description, kept as files and
            // compiled into the binary.
            resources: [
                .embedInCode("Contract/openapi.json"),
                .embedInCode("Dashboard/Page/index.html"),
                .embedInCode("Dashboard/Page/app.css"),
                .embedInCode("Dashboard/Page/app.js"),
            ]
        ),
        // `weir mock-upstream`: a development stand-in for the model API (tests, demos,
        // benchmarks). Not part of the gateway.
        .target(
            name: "WeirMockUpstream",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "weir",
            dependencies: ["WeirCommands", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Release-build benchmarks of the engine; see BENCHMARKS.md.
        // (WeirServer for the dashboard's refusal history, whose cost on the decision path
        // it measures.)
        .executableTarget(name: "weir-bench", dependencies: ["WeirCore", "WeirPolicy", "WeirConformance", "WeirServer"]),
        // The Redis store: a RESP client on SwiftNIO and the limiter's Lua function library.
        .target(
            name: "WeirRedis",
            dependencies: [
                "WeirCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            resources: [.embedInCode("Lua/weir.lua")]
        ),
        // Test support: a real redis-server on a free loopback port, for the tests of the
        // Redis store and of `weir serve --store redis://`; and `ChildProcess`, with which
        // every test starts the programs it needs (posix_spawn, not Foundation's Process);
        // `EventSignal`, with which tests wait on the server's events instead of polling.
        .target(
            name: "WeirRedisTesting",
            dependencies: [
                "WeirRedis", "WeirPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The Envoy rate limit service (envoy.service.ratelimit.v3 over gRPC) over the
        // limiter. Its protobuf and gRPC code is generated once and committed
        // (scripts/generate-envoy-proto); building needs neither protoc nor plugins.
        .target(
            name: "WeirEnvoy",
            dependencies: [
                "WeirCore", "WeirPolicy", "WeirAnswers",
                // The generated client of the service (tests, tools); the server is Weir's own.
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ]
        ),
        .testTarget(
            name: "WeirEnvoyTests",
            dependencies: [
                "WeirEnvoy", "WeirServer", "WeirAnswers", "WeirPolicy", "WeirCore", "WeirRedisTesting", "WeirMockUpstream",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ]
        ),
        // Release-build benchmark of the Redis store; see bench/redis.sh and BENCHMARKS.md.
        .executableTarget(
            name: "weir-redis-bench",
            dependencies: ["WeirRedis", "WeirCore", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(name: "WeirCoreTests", dependencies: ["WeirCore", "WeirConformance"]),
        .testTarget(
            name: "WeirRedisTests",
            dependencies: [
                "WeirRedis", "WeirCore", "WeirConformance", "WeirRedisTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .testTarget(
            name: "WeirPolicyTests",
            dependencies: ["WeirPolicy", "WeirCore", "WeirConformance"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "WeirCommandsTests",
            dependencies: ["WeirCommands", "WeirPolicy", "WeirCore", "WeirRedisTesting"]
        ),
        .testTarget(
            name: "WeirServerTests",
            dependencies: [
                "WeirServer", "WeirAnswers", "WeirPolicy", "WeirCore", "WeirConformance", "WeirRedis", "WeirRedisTesting", "WeirEnvoy",
                "WeirMockUpstream",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .testTarget(
            name: "WeirHummingbirdTests",
            dependencies: [
                "WeirHummingbird", "WeirAnswers", "WeirPolicy", "WeirCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
