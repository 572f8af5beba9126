import Logging
import Node
import Testing

/// `--log-level` / `RUST_LOG` directives: a default and levels per module.
struct LogLevelsTests {
    @Test func aPlainLevelIsTheDefaultForEveryModule() throws {
        for (text, level) in [("debug", Logger.Level.debug), ("WARN", .warning), ("warning", .warning), ("critical", .critical), ("trace", .trace), ("", .info)] {
            let levels = try LogLevels.parse(text)
            #expect(levels.defaultLevel == level, "\(text)")
            #expect(LogLevels.Module.allCases.allSatisfy { levels.level(of: $0) == level })
        }
    }

    @Test func directivesSetModulesApartFromTheDefault() throws {
        let levels = try LogLevels.parse(" info , mesh=debug,redis=warn,smg::history=error,smg.upgrade=trace")
        #expect(levels.defaultLevel == .info)
        #expect(levels.level(of: .mesh) == .debug && levels.level(of: .redis) == .warning)
        #expect(levels.level(of: .history) == .error && levels.level(of: .upgrade) == .trace)
        #expect(levels.level(of: .server) == .info && levels.level(of: .workers) == .info)
        // RUST_LOG's crate-wide forms: `smg=debug` is the default; `smg::mesh::swim` is the mesh.
        #expect(try LogLevels.parse("warn,smg=debug").defaultLevel == .debug)
        #expect(try LogLevels.parse("smg::mesh::swim=debug").level(of: .mesh) == .debug)
        #expect(try LogLevels.parse("mesh").level(of: .mesh) == .trace, "a target alone is everything it says")
    }

    @Test func targetsThatAreNotSmgsAreLeftOutOfRUSTLOGButRefusedOnTheCommandLine() throws {
        let rust = try LogLevels.parse("smg=debug,hyper=warn,tower_http=debug", foreignTargetsAllowed: true)
        #expect(rust.defaultLevel == .debug && rust.ignoredTargets == ["hyper", "tower_http"])
        #expect(throws: LogLevels.Invalid.self) { try LogLevels.parse("info,hyper=warn") }
        do {
            _ = try LogLevels.parse("info,meshh=debug")
            Issue.record("a misspelt module was taken")
        } catch {
            #expect(error.message.contains("'meshh' is not a module of smg") && error.message.contains("mesh, workers"), "\(error.message)")
        }
    }

    @Test func badDirectivesAreClearErrors() throws {
        for bad in ["loud", "mesh=loud", "info,debug", "=debug", String(repeating: "mesh=debug,", count: 70)] {
            #expect(throws: LogLevels.Invalid.self, "\(bad.prefix(40))") { try LogLevels.parse(bad) }
        }
        // In RUST_LOG a bare word is a target (left out, and named at start-up), but a bad level is still an error.
        #expect(try LogLevels.parse("loud", foreignTargetsAllowed: true).ignoredTargets == ["loud"])
        for bad in ["mesh=loud", "info,debug", "=debug"] {
            #expect(throws: LogLevels.Invalid.self, "\(bad)") { try LogLevels.parse(bad, foreignTargetsAllowed: true) }
        }
    }

    @Test func aModuleLoggerCarriesItsLevelAndName() throws {
        let base = Logger(label: "smg") { StreamLogHandler.standardError(label: $0) }
        let mesh = base.module(.mesh, try LogLevels.parse("warn,mesh=debug"))
        #expect(mesh.logLevel == .debug)
        #expect(mesh[metadataKey: "module"] == "mesh")
        #expect(base.module(.redis, try LogLevels.parse("warn,mesh=debug")).logLevel == .warning)
    }
}
