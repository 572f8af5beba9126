import Node
import NIOPosix
import SimWorker

/// `smg demo`: three simulated workers in this process and a router over them, so a newcomer
/// can `curl` a working gateway with no GPU and nothing else installed.
enum Demo {
    static func workers(count: Int) async throws -> [SimWorkerServer] {
        let group = MultiThreadedEventLoopGroup.singleton
        var servers: [SimWorkerServer] = []
        for i in 0..<count {
            var o = SimWorkerOptions()
            o.workerName = "sim-\(i + 1)"
            o.modelID = "sim-model"
            o.timeToFirstTokenMs = 20
            o.tokensPerSecond = 50
            o.defaultOutputTokens = 16
            servers.append(try await SimWorkerServer.start(o, group: group))
        }
        return servers
    }

    static func banner(port: Int) -> String {
        """

        smg demo: a router on http://127.0.0.1:\(port) over three simulated workers (model sim-model).
        Try:
          curl -s http://127.0.0.1:\(port)/v1/chat/completions -H 'content-type: application/json' \\
            -d '{"model":"sim-model","messages":[{"role":"user","content":"Hello!"}]}'
          curl -sN http://127.0.0.1:\(port)/v1/chat/completions -d '{"model":"sim-model","stream":true,"messages":[{"role":"user","content":"Hi"}]}'
          curl -s http://127.0.0.1:\(port)/workers
        Ctrl-C stops it.

        """
    }
}
