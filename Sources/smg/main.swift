import Foundation
import Logging
import Mesh
import Node
import TraceExport

// The `smg` executable: everything lives in the Node library; this only wires it to a process.
signal(SIGPIPE, SIG_IGN)
let environment = ProcessInfo.processInfo.environment

/// Loads the router's configuration, starts it, announces it, serves until a signal.
func serve(_ arguments: [String], demo: Demo?) async -> Never {
    let config: RouterConfig
    do {
        config = try RouterConfig.load(arguments: arguments, environment: environment)
    } catch {
        Launcher.printErr("smg: error: \(error.message)")
        exit(2)
    }
    let logs: Launcher.LogOutput
    do {
        logs = try Launcher.makeLogger(level: config.logLevels.defaultLevel, json: config.logJSON, directory: config.logDir)
    } catch {
        Launcher.printErr("smg: error: \(error.message)")
        exit(2)
    }
    var logger = logs.logger
    // Routers of one mesh often share a terminal or a log collector: say which one speaks.
    if let mesh = config.mesh { logger[metadataKey: "router"] = "\(mesh.name)" }
    // Installed before the ready line, so a signal sent right after it drains instead of killing.
    let signals = Launcher.Signals(exitWithParent: environment[Demo.parentVariable].flatMap { Int32($0) })
    let node: RouterNode
    do {
        let tracing = config.tracing.map { settings in
            OTLPTraceExport.backend(settings, instance: config.instanceName, logger: logger.module(.server, config.logLevels))
        }
        node = try await RouterNode.start(config: config, logger: logger, reloads: signals.reloads,
                                          upgrades: demo == nil ? signals.upgrades : nil, commandLine: CommandLine.arguments, tracing: tracing)
    } catch {
        Launcher.printErr("smg: error: cannot start: \(error) (host \(config.host), --port \(config.port), --prometheus-port \(config.prometheusPort))")
        logs.flush()
        exit(1)
    }
    if let demo { await demo.waitUntilReady(node) }
    Launcher.printOut(Launcher.readyLine(node, host: config.host))
    SystemdNotify.ready()
    if let demo { Launcher.printOut(demo.banner(ports: [node.apiPort])) }
    await Launcher.serve(node, until: signals)
    logs.flush()
    exit(0)
}

switch Launcher.command(Array(CommandLine.arguments.dropFirst())) {
case .help:
    Launcher.printOut(HelpText.render())
case .meshKeygen:
    // One line: write it to a file (mode 600) and give every router --mesh-key-file.
    Launcher.printOut(MeshKeyring.generate())
case .configReference:
    Launcher.printOut(HelpText.markdownTable())
case .version:
    Launcher.printOut("smg \(Launcher.version)")
case .run(let arguments):
    await serve(arguments, demo: nil)
case .demo(let arguments):
    let demo: Demo
    do {
        demo = try await Demo.start(arguments: arguments)
    } catch {
        Launcher.printErr("smg: error: \(error)")
        exit(2)
    }
    if demo.routerArguments.count > 1 { await demo.runMeshed() }
    await serve(demo.routerArguments[0], demo: demo)
}
