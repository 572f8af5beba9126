import Foundation
import NIOPosix
import SimWorker

// smg-sim-worker: one simulated SGLang worker, serving until killed.
let options: SimWorkerOptions
do {
    options = try SimWorkerOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch .helpRequested {
    print(SimWorkerOptions.usage)
    exit(0)
} catch {
    FileHandle.standardError.write(Data("smg-sim-worker: \(error)\n\n\(SimWorkerOptions.usage)\n".utf8))
    exit(2)
}
signal(SIGPIPE, SIG_IGN)
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
do {
    let server = try await SimWorkerServer.start(options, group: group)
    // Tests and scripts read this line to learn the port when started with --port 0.
    FileHandle.standardOutput.write(Data("smg-sim-worker listening on \(server.url) model=\(options.modelID) name=\(options.workerName)\(server.bootstrapPort.map { " bootstrap=\($0)" } ?? "")\n".utf8))
    while true { try await Task.sleep(for: .seconds(3600)) }
} catch {
    FileHandle.standardError.write(Data("smg-sim-worker: cannot start: \(error)\n".utf8))
    exit(1)
}
