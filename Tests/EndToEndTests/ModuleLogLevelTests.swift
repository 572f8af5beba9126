import Foundation
import TestSupport
import Testing

/// Per-module log levels end to end: `RUST_LOG` written for the reference gateway turns the
/// mesh's debug lines on in one router and nothing else, its foreign targets are named once,
/// and a misspelt module on the command line stops start-up.
@Suite(.serialized) struct ModuleLogLevelTests {
    @Test func rustLogTurnsOnTheMeshsDebugLinesAndNothingElse() async throws {
        let ports = try (0..<2).map { _ in try freeLoopbackPort() }
        let w = try await SimWorkerProcess(name: "w")
        func mesh(_ name: String, _ i: Int) -> [String] {
            ["--enable-mesh", "--mesh-server-name", name, "--mesh-host", "127.0.0.1", "--mesh-port", String(ports[i]),
             "--mesh-peer-urls", "127.0.0.1:\(ports[1 - i])", "--worker-urls", w.url]
        }
        let a = try await RouterProcess(mesh("a", 0), environment: ["RUST_LOG": "info,mesh=debug,hyper=warn"])
        let b = try await RouterProcess(mesh("b", 1), environment: ["RUST_LOG": ""])
        // Digests go out every second per peer: a logs them, b (at info) does not.
        try await eventually(timeout: .seconds(10), "a logs the mesh's digests") {
            a.process.stderr.contains("mesh: digest sent") && a.process.stderr.contains("mesh: digest received")
        }
        #expect(try a.chat("x").status == 200)
        let lines = a.process.stderr.split(separator: "\n")
        let debug = lines.filter { $0.contains(" debug ") }
        #expect(!debug.isEmpty && debug.allSatisfy { $0.contains("module=mesh") }, "only the mesh logs at debug: \(debug.filter { !$0.contains("module=mesh") }.prefix(3))")
        #expect(lines.contains { $0.contains("mesh member alive") && $0.contains("module=mesh") })
        #expect(lines.contains { $0.contains("worker added") && $0.contains("module=workers") })
        #expect(lines.filter { $0.contains("RUST_LOG names targets smg does not have") && $0.contains("hyper") }.count == 1)
        #expect(!b.process.stderr.contains(" debug "), "b logs at info")
    }

    @Test func aModuleTheRouterDoesNotHaveStopsStartUpOnTheCommandLine() async throws {
        let p = try TestProcess(Binaries.smg, ["--log-level", "info,meshh=debug"], name: "smg")
        #expect(await p.waitForExit(timeout: .seconds(10)) == 2)
        #expect(p.stderr.contains("'meshh' is not a module of smg"), "\(p.stderr)")
    }
}
