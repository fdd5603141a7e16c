// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "weir",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "WeirCore", targets: ["WeirCore"]),
        .library(name: "WeirPolicy", targets: ["WeirPolicy"]),
        .library(name: "WeirConformance", targets: ["WeirConformance"]),
        .executable(name: "weir", targets: ["weir"]),
        .executable(name: "weir-bench", targets: ["weir-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
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
            ]
        ),
        .executableTarget(
            name: "weir",
            dependencies: ["WeirCommands", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Release-build benchmarks of the engine; see BENCHMARKS.md.
        .executableTarget(name: "weir-bench", dependencies: ["WeirCore", "WeirConformance"]),
        .testTarget(name: "WeirCoreTests", dependencies: ["WeirCore", "WeirConformance"]),
        .testTarget(
            name: "WeirPolicyTests",
            dependencies: ["WeirPolicy", "WeirCore", "WeirConformance"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "WeirCommandsTests",
            dependencies: ["WeirCommands", "WeirPolicy", "WeirCore"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
