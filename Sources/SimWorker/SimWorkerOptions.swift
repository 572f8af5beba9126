/// Knobs of a simulated SGLang worker. Everything a test, the demo or a benchmark needs to
/// make a worker fast, slow, flaky or stuck without a GPU.
public struct SimWorkerOptions: Sendable {
    public var host = "127.0.0.1"
    /// 0 lets the OS choose; the bound port is printed and returned.
    public var port = 0
    /// What `/v1/models` and responses report as the served model.
    public var modelID = "sim-model"
    /// A name reported in the `x-sim-worker` response header, so callers can tell workers apart.
    public var workerName = "sim"
    /// Delay before the first token (milliseconds).
    public var timeToFirstTokenMs = 0
    /// Streaming pace; 0 sends every token at once.
    public var tokensPerSecond = 0.0
    /// Tokens generated when the request does not say (`max_tokens` / `max_new_tokens`).
    public var defaultOutputTokens = 8
    /// Upper bound on generated tokens, whatever the request asks for.
    public var maxOutputTokens = 4096
    /// Fraction of inference requests answered with HTTP 500.
    public var failureRate = 0.0
    /// Fraction of inference requests that never get an answer.
    public var hangRate = 0.0
    /// Fraction of inference requests whose connection is closed without an answer.
    public var dropRate = 0.0
    /// Fraction of inference requests whose answer starts and then breaks off (the connection
    /// closes after the head and part of the body).
    public var cutRate = 0.0
    /// Prefix cache size in blocks (LRU); 0 disables caching.
    public var cacheCapacityBlocks = 4096
    /// Characters per cache block. The simulator counts one character as one token.
    public var cacheBlockSize = 16
    /// Added to the load `/get_load` reports and to the running requests of `/v1/loads`, to
    /// simulate a worker busy with other clients.
    public var extraReportedLoad = 0
    /// Waiting requests `/v1/loads` reports (summed over ranks), as an engine with a queue would.
    public var reportedWaiting = 0
    /// KV-cache token usage `/v1/loads` reports, 0...1.
    public var reportedTokenUsage = 0.0
    /// Requests generated at once, as an engine's batch; more wait in a queue that `/v1/loads`
    /// reports, with the batch's fill as KV usage (0: no limit).
    public var maxRunning = 0
    /// Seed for failure injection, so a flaky worker is reproducible.
    public var seed: UInt64 = 0x5EED
    /// HTTPS with this certificate chain and key (PEM), when both are set.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// With HTTPS: require a client certificate issued by this CA (PEM).
    public var tlsClientCAPath: String?
    /// What the worker plays in PD disaggregation (`SimBootstrap`).
    public enum Role: String, Sendable { case regular, prefill, decode }
    public var role = Role.regular
    /// A prefill worker's KV bootstrap server port (0: any free one, reported by the server).
    public var bootstrapPort = 0
    /// Data-parallel ranks (`dp_size` in `/get_server_info`); a request's `data_parallel_rank`
    /// must name one of them.
    public var dpSize = 1
    /// How inference requests are answered wrongly (`SimMisbehavior`); nil: properly.
    public var misbehave: SimMisbehavior?
    /// Answers HTTP/2 too: h2c by prior knowledge on cleartext, ALPN `h2` with TLS (SGLang and
    /// vLLM speak HTTP/1.1 only; this stands for a worker behind a proxy that speaks HTTP/2).
    public var http2 = false
    /// With `http2`: each connection takes this many streams at once (SETTINGS_MAX_CONCURRENT_STREAMS;
    /// 0, a worker that takes none, is a hostile case for the router).
    public var http2MaxStreams = 100

    public init() {}

    /// Parses `--flag value` pairs as the `smg-sim-worker` executable accepts them.
    public static func parse(_ arguments: [String]) throws(SimWorkerOptionError) -> SimWorkerOptions {
        var o = SimWorkerOptions()
        var i = 0
        func value(_ name: String) throws(SimWorkerOptionError) -> String {
            guard i + 1 < arguments.count else { throw .missingValue(name) }
            i += 1
            return arguments[i]
        }
        func int(_ name: String) throws(SimWorkerOptionError) -> Int {
            let v = try value(name)
            guard let n = Int(v), n >= 0 else { throw .badValue(name, v) }
            return n
        }
        func double(_ name: String) throws(SimWorkerOptionError) -> Double {
            let v = try value(name)
            guard let d = Double(v), d >= 0, d.isFinite else { throw .badValue(name, v) }
            return d
        }
        func rate(_ name: String) throws(SimWorkerOptionError) -> Double {
            let d = try double(name)
            guard d <= 1 else { throw .badValue(name, String(d)) }
            return d
        }
        while i < arguments.count {
            let a = arguments[i]
            switch a {
            case "--host": o.host = try value(a)
            case "--port": o.port = try int(a)
            case "--model-id", "--model": o.modelID = try value(a)
            case "--name": o.workerName = try value(a)
            case "--ttft-ms": o.timeToFirstTokenMs = try int(a)
            case "--tokens-per-second": o.tokensPerSecond = try double(a)
            case "--output-tokens": o.defaultOutputTokens = try int(a)
            case "--max-output-tokens": o.maxOutputTokens = try int(a)
            case "--failure-rate": o.failureRate = try rate(a)
            case "--hang-rate": o.hangRate = try rate(a)
            case "--drop-rate": o.dropRate = try rate(a)
            case "--cut-rate": o.cutRate = try rate(a)
            case "--cache-capacity-blocks": o.cacheCapacityBlocks = try int(a)
            case "--cache-block-size":
                o.cacheBlockSize = try int(a)
                if o.cacheBlockSize == 0 { throw .badValue(a, "0") }
            case "--seed": o.seed = UInt64(try int(a))
            case "--extra-reported-load": o.extraReportedLoad = try int(a)
            case "--reported-waiting": o.reportedWaiting = try int(a)
            case "--reported-token-usage": o.reportedTokenUsage = try rate(a)
            case "--max-running": o.maxRunning = try int(a)
            case "--tls-cert": o.tlsCertificatePath = try value(a)
            case "--tls-key": o.tlsKeyPath = try value(a)
            case "--tls-client-ca": o.tlsClientCAPath = try value(a)
            case "--role":
                let v = try value(a)
                guard let r = Role(rawValue: v) else { throw .badValue(a, v) }
                o.role = r
            case "--bootstrap-port": o.bootstrapPort = try int(a)
            case "--dp-size":
                o.dpSize = try int(a)
                if o.dpSize == 0 { throw .badValue(a, "0") }
            case "--misbehave":
                let v = try value(a)
                guard let m = SimMisbehavior(rawValue: v) else { throw .badValue(a, v) }
                o.misbehave = m
            case "--http2": o.http2 = true
            case "--http2-max-streams": o.http2MaxStreams = try int(a)
            case "-h", "--help": throw .helpRequested
            default: throw .unknownFlag(a)
            }
            i += 1
        }
        if (o.tlsCertificatePath == nil) != (o.tlsKeyPath == nil) { throw SimWorkerOptionError.badValue("--tls-cert/--tls-key", "give both") }
        if o.bootstrapPort != 0, o.role != .prefill { throw SimWorkerOptionError.badValue("--bootstrap-port", "only a prefill worker has one") }
        if o.tlsClientCAPath != nil, o.tlsCertificatePath == nil { throw SimWorkerOptionError.badValue("--tls-client-ca", "needs --tls-cert and --tls-key") }
        return o
    }

    public static let usage = """
        smg-sim-worker: a simulated SGLang worker (no GPU, one character = one token)

          --host H                   bind address (127.0.0.1)
          --port N                   port, 0 = any free port (0)
          --model-id ID              served model id (sim-model)
          --name NAME                worker name, sent as the x-sim-worker header (sim)
          --ttft-ms N                time to first token in ms (0)
          --tokens-per-second X      streaming pace, 0 = as fast as possible (0)
          --output-tokens N          tokens generated when the request names none (8)
          --max-output-tokens N      cap on generated tokens (4096)
          --failure-rate P           fraction of requests answered with 500 (0)
          --hang-rate P              fraction of requests never answered (0)
          --drop-rate P              fraction of connections closed without answer (0)
          --cut-rate P               fraction of answers that break off after the head and part of the body (0)
          --cache-capacity-blocks N  prefix cache size in blocks, LRU (4096)
          --cache-block-size N       characters per cache block (16)
          --extra-reported-load N    added to the load /get_load and the running requests /v1/loads report (0)
          --reported-waiting N       waiting requests /v1/loads reports, summed over ranks (0)
          --reported-token-usage X   KV-cache token usage /v1/loads reports, 0 to 1 (0)
          --max-running N            requests generated at once; more wait in a queue /v1/loads
                                     reports, the batch's fill as KV usage (0: no limit)
          --seed N                   seed for failure injection
          --tls-cert FILE            serve HTTPS with this certificate chain (PEM; with --tls-key)
          --tls-key FILE             the private key of --tls-cert (PEM)
          --tls-client-ca FILE       with HTTPS: require client certificates issued by this CA
          --role R                   regular, prefill or decode (PD disaggregation) (regular)
          --bootstrap-port N         a prefill worker's KV bootstrap port, 0 = any free port (0)
          --dp-size N                data-parallel ranks; data_parallel_rank must be below N (1)
          --http2                    answer HTTP/2 too: h2c by prior knowledge, ALPN h2 with TLS
          --http2-max-streams N      with --http2: streams one connection takes at once, 0 none (100)
          --misbehave MODE           answer inference wrongly: garbage, endless-line, huge-body,
                                     wrong-length, trickle, pause-mid-event (health checks stay fine)
        """
}

public enum SimWorkerOptionError: Error, CustomStringConvertible {
    case missingValue(String), badValue(String, String), unknownFlag(String), helpRequested
    public var description: String {
        switch self {
        case .missingValue(let f): return "flag \(f) needs a value"
        case .badValue(let f, let v): return "flag \(f): invalid value '\(v)'"
        case .unknownFlag(let f): return "unknown flag \(f)"
        case .helpRequested: return SimWorkerOptions.usage
        }
    }
}
