// swift-tools-version:6.1
import PackageDescription

// Dependency versions are the ones present in the build machines' package mirror.
let package = Package(
    name: "smg",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "smg", targets: ["smg"]),
        .executable(name: "smg-sim-worker", targets: ["smg-sim-worker"]),
        .executable(name: "smg-bench", targets: ["smg-bench"]),
        .executable(name: "smg-policy-bench", targets: ["smg-policy-bench"]),
        .executable(name: "smg-mesh-bench", targets: ["smg-mesh-bench"]),
        .library(name: "Node", targets: ["Node"]),
        .library(name: "SimWorker", targets: ["SimWorker"]),
        .library(name: "Policies", targets: ["Policies"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.6.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // Control-plane JWT/JWKS verification (signatures are never checked by hand).
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        // TLS on the API port and to https workers (BoringSSL underneath; no TLS code of our own).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // --upstream-http2: HTTP/2 to workers, h2c by prior knowledge or h2 by ALPN (no framing of our own).
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        // Tests make their certificates at run time.
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        // --history-backend postgres: the wire protocol, pool and TLS (no SQL client of our own).
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // Tracing: the router is instrumented through the tracing API; only the executable links
        // swift-otel's OTLP/gRPC exporter (so the fuzz build and the libraries do not build gRPC).
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPGRPC"]),
    ],
    targets: [
        // System-library shims: the mesh seals gossip with libsodium, history talks Redis through hiredis.
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium",
                       providers: [.apt(["libsodium-dev"])]),
        // No pkgConfig: hiredis' .pc adds -D_FILE_OFFSET_BITS=64, which SwiftPM refuses with a
        // warning on every build; the headers are found in /usr/include/hiredis as they are.
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        // glibc's malloc statistics for the allocator metrics (a header of libc itself).
        .systemLibrary(name: "CMalloc"),

        // The few primitives more than one module needs, stdlib only: a seeded generator
        // (SplitMix64), a stable hash (FNV-1a), JSON string quoting.
        .target(name: "Primitives"),
        // Pure routing policies: stdlib only, no IO, no clock reads.
        .target(name: "Policies", dependencies: ["Primitives"]),
        // Pure reliability cores: retry plans, circuit breaker, health state, token bucket.
        .target(name: "Reliability"),
        // The HA mesh: Core (pure SWIM + CRDTs, no IO, no clock) and the rest (NIO transport,
        // libsodium sealing) around it.
        .target(name: "MeshCore", dependencies: ["Primitives"], path: "Sources/Mesh/Core"),
        .target(
            name: "Mesh",
            dependencies: [
                "MeshCore", "CSodium",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Mesh", exclude: ["Core", "Simulation"]
        ),
        // The router node: config, data plane, registry, metrics.
        .target(
            name: "Node",
            dependencies: [
                "Primitives", "Policies", "Reliability", "Mesh", "CHiredis", "CMalloc",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // --enable-trace: swift-otel's OTLP/gRPC exporter behind the tracing API Node uses.
        .target(
            name: "TraceExport",
            dependencies: [
                "Node",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // A simulated SGLang worker: tests, demo, benchmarks and cluster/ run against it.
        .target(
            name: "SimWorker",
            dependencies: [
                "Primitives",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "smg",
            dependencies: [
                "Node", "Mesh", "SimWorker", "TraceExport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(name: "smg-sim-worker", dependencies: ["SimWorker"]),
        
        // Benchmarks: programs that print numbers (docs/benchmarks.md), under Benchmarks/.
        // The router under load, against simulated workers (or any router command).
        .executableTarget(
            name: "smg-bench",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Benchmarks/smg-bench"
        ),
        // Micro-benchmarks of the policies (tree insert/match/evict/export, decisions), counting
        // allocations through malloc-interposer (the program re-runs itself with LD_PRELOAD).
        .executableTarget(
            name: "smg-policy-bench",
            dependencies: ["Policies", "Primitives", .product(name: "MallocInterposerSwift", package: "malloc-interposer")],
            path: "Benchmarks/smg-policy-bench"
        ),
        // The mesh core (SWIM and replication) at 200+ nodes on the simulated network.
        .executableTarget(name: "smg-mesh-bench", dependencies: ["MeshCore", "MeshSimulation", "Primitives"], path: "Benchmarks/smg-mesh-bench"),

        // Fuzz targets for the parsers strangers reach (fuzz/run.sh builds them with libFuzzer;
        // a normal build replays the seed corpus through them).
        .executableTarget(
            name: "smg-fuzz",
            dependencies: [
                "Node", "Mesh", "MeshCore", "Policies", "Reliability", "RouterHarness",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            path: "fuzz/smg-fuzz"
        ),

        // The deterministic network simulator that drives MeshCore nodes: for tests and the mesh
        // benchmark, never shipped.
        .target(name: "MeshSimulation", dependencies: ["MeshCore", "Primitives"], path: "Sources/Mesh/Simulation"),
        // What tests share: waiting on a deadline, free ports, a redis-server launcher.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        // The router's request path on an embedded loop with scripted workers: for tests and the
        // `upstream` fuzz target.
        .target(
            name: "RouterHarness",
            dependencies: ["Node", "TestSupport", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Logging", package: "swift-log")],
            path: "Tests/RouterHarness"
        ),

        .testTarget(name: "PoliciesTests", dependencies: ["Policies", "Primitives"]),
        .testTarget(name: "SimWorkerTests", dependencies: ["SimWorker"]),
        .testTarget(name: "ReliabilityTests", dependencies: ["Reliability", "Policies", "Primitives"]),
        .testTarget(name: "MeshCoreTests", dependencies: ["MeshCore", "MeshSimulation", "Primitives"]),
        .testTarget(
            name: "MeshTests",
            dependencies: [
                "Mesh", "MeshCore", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "NodeTests",
            dependencies: ["Node", "Mesh", "SimWorker", "Primitives", "CHiredis", "CSodium", "TestSupport", "RouterHarness",
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                           .product(name: "JWTKit", package: "jwt-kit"),
                           .product(name: "_CryptoExtras", package: "swift-crypto"),
                           .product(name: "PostgresNIO", package: "postgres-nio")]
        ),
        // End-to-end: starts the real `smg` and `smg-sim-worker` binaries on loopback.
        // Its JWKS server and token issuer use NIO and jwt-kit (keys generated at test time).
        .testTarget(name: "EndToEndTests", dependencies: [
            "smg", "smg-sim-worker", "Primitives", "Mesh", "MeshCore", "TestSupport",
            // The router and the simulated worker in process too (Support/InProcess.swift).
            "Node", "SimWorker", .product(name: "Logging", package: "swift-log"),
            .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ]
)
