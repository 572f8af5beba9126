import Foundation
import Mesh
import Node

// The `smg` executable: everything lives in the Node library; this only wires it to a process.
signal(SIGPIPE, SIG_IGN)
let environment = ProcessInfo.processInfo.environment
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
case .run(let arguments), .demo(let arguments):
    var args = arguments
    var demoWorkers: [String] = []
    let isDemo: Bool
    if case .demo = Launcher.command(Array(CommandLine.arguments.dropFirst())) { isDemo = true } else { isDemo = false }
    if isDemo {
        do {
            demoWorkers = try await Demo.workers(count: 3).map(\.url)
        } catch {
            Launcher.printErr("smg: error: cannot start the demo's simulated workers: \(error)")
            exit(1)
        }
        args = ["--worker-urls"] + demoWorkers + ["--host", "127.0.0.1", "--prometheus-host", "127.0.0.1"] + args
    }
    let config: RouterConfig
    do {
        config = try RouterConfig.load(arguments: args, environment: environment)
    } catch {
        Launcher.printErr("smg: error: \(error.message)")
        exit(2)
    }
    let logger = Launcher.makeLogger(level: config.logLevel)
    let signals = Launcher.Signals()
    let node: RouterNode
    do {
        node = try await RouterNode.start(config: config, logger: logger)
    } catch {
        Launcher.printErr("smg: error: cannot start: \(error) (host \(config.host), --port \(config.port), --prometheus-port \(config.prometheusPort))")
        exit(1)
    }
    if isDemo {
        // The first health checks run at once; let them finish so the first curl succeeds.
        let deadline = ContinuousClock.now + .seconds(5)
        while !node.state.registry.all.allSatisfy(\.isAvailable), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
    Launcher.printOut(Launcher.readyLine(node, host: config.host))
    if isDemo { Launcher.printOut(Demo.banner(port: node.apiPort)) }
    await Launcher.serve(node, until: signals)
    exit(0)
}
