/// Every flag of the SGLang Model Gateway configuration reference, plus `--config`.
/// Defaults follow the reference; where its documentation disagrees with its `--help`, the `--help` wins.
public enum FlagTable {
    static let tokenizer = "tokenizer and parsers"
    static let history = "history storage"
    static let security = "security"

    public static let all: [FlagSpec] = [
        // Core
        FlagSpec("config", .string, nil, group: "Core", "YAML file with the same keys as the flags (dash or underscore spelling)"),
        FlagSpec("host", .string, .string("0.0.0.0"), group: "Core", "Network interface to bind the API server to"),
        FlagSpec("port", .int, .int(30000), group: "Core", "Port of the main API server (0 = any free port)"),
        FlagSpec("worker-urls", .list, .list([]), group: "Core", "Worker URLs to route to (space-separated)"),
        FlagSpec("log-level", .string, .string("info"), env: "RUST_LOG", group: "Core", "Log level: trace, debug, info, warn, error or critical, or directives with levels per module: info,mesh=debug,redis=warn (modules: server, mesh, workers, history, redis, security, upgrade)"),
        FlagSpec("log-dir", .string, nil, group: "Core", "Directory to store log files (smg.YYYY-MM-DD, a file per UTC day, beside the console); created when missing"),
        FlagSpec("log-json", .bool, .bool(false), group: "Core", "Output logs as JSON, one object per line (console and files)"),

        // Routing policy
        FlagSpec("policy", .string, .string("cache_aware"), group: "Routing policy", "random, round_robin, power_of_two, least_load, cache_aware, prefix_hash, consistent_hashing, manual"),
        FlagSpec("power-of-two-load-metric", .string, .string("expected_wait"), group: "Routing policy",
                 "What power_of_two compares: expected_wait (as least_load computes it), requests (the worker's report, else the routers' count) or least_requests (the routers' count)"),
        FlagSpec("least-load-kv-pressure-weight", .double, .double(0.15), group: "Routing policy",
                 "Seconds of expected wait a full KV cache adds (least_load, power_of_two's expected_wait)"),
        FlagSpec("least-load-default-throughput", .double, .double(2000.0), group: "Routing policy",
                 "Generation throughput (tokens/s) assumed for a worker whose engine reports none"),
        FlagSpec("least-load-mean-prefill-tokens", .int, .int(1024), group: "Routing policy",
                 "Tokens one request stands for in the expected wait (the router counts no tokens)"),
        FlagSpec("least-load-max-waiting-requests", .int, .int(0), group: "Routing policy",
                 "least_load skips a worker whose reported waiting requests plus those sent since the report reached this, while another has not (0: no cap)"),
        FlagSpec("cache-threshold", .double, .double(0.3), group: "Routing policy", "Prefix match ratio (0.0-1.0) above which cache_aware follows the cache"),
        FlagSpec("balance-abs-threshold", .int, .int(64), group: "Routing policy", "Absolute load difference that makes the system imbalanced"),
        FlagSpec("balance-rel-threshold", .double, .double(1.5), group: "Routing policy", "Relative load ratio that makes the system imbalanced"),
        FlagSpec("balance-token-usage-threshold", .double, .double(1.0), group: "Routing policy",
                 "cache_aware: when the hottest minus the coldest KV-cache usage the workers report is above this, cache affinity gives way to the least loaded worker (1.0 or more: off)"),
        FlagSpec("overload-token-usage-threshold", .double, .double(1.0), group: "Routing policy",
                 "cache_aware: a worker whose reported KV-cache usage is above this is passed over while another is not (1.0 or more: off)"),
        FlagSpec("worker-warmup-secs", .int, .int(60), group: "Routing policy",
                 "cache_aware: for this long after a worker becomes routable, until its tree grew by --worker-warmup-blocks, it is warming: it gets a share of cache misses and diverted hits so it builds a cache (0: no warm-up)"),
        FlagSpec("worker-warmup-share", .double, .double(0.25), group: "Routing policy",
                 "cache_aware: one cache miss in 1/share goes to a warming worker (0.0 to 1.0); misses go to the worker holding least anyway"),
        FlagSpec("worker-warmup-blocks", .int, .int(1024), group: "Routing policy",
                 "cache_aware: a warming worker whose tree grew by this many blocks (of 16 prompt bytes) is warm"),
        FlagSpec("worker-warmup-thin-ratio", .double, .double(0.5), group: "Routing policy",
                 "cache_aware: a worker whose tree holds less than this share of the fleet's median (or nothing) is thin and warms again until it grew by --worker-warmup-blocks, whatever emptied it (0: the age rule alone)"),
        FlagSpec("worker-warmup-divert-every", .int, .int(8), group: "Routing policy",
                 "cache_aware: one cache hit in this many goes to an idle warming worker although another holds its prefix (0: never)"),
        FlagSpec("eviction-interval", .int, .int(120), group: "Routing policy", "Seconds between cache-tree eviction passes"),
        FlagSpec("max-tree-size", .int, .int(67_108_864), group: "Routing policy", "Prompt bytes each worker may hold in the cache-aware tree (LRU eviction above it)"),
        FlagSpec("prefix-token-count", .int, .int(256), group: "Routing policy", "Prefix length hashed by prefix_hash (UTF-8 bytes over HTTP)"),
        FlagSpec("prefix-hash-load-factor", .double, .double(1.25), group: "Routing policy", "Load factor above which prefix_hash rebalances"),
        FlagSpec("max-idle-secs", .int, .int(14400), group: "Routing policy", "Idle seconds before a manual routing key is forgotten"),
        FlagSpec("assignment-mode", .string, .string("random"), group: "Routing policy", "New routing key assignment: random, min_load, min_group"),
        FlagSpec("dp-aware", .bool, .bool(false), group: "Routing policy", "Data-parallelism aware scheduling"),
        FlagSpec("enable-igw", .bool, .bool(false), group: "Routing policy", "Inference Gateway mode for multi-model support"),

        // Worker load
        FlagSpec("load-monitor-interval", .int, .int(10), group: "Worker load",
                 "Seconds between polls of every worker's GET /v1/loads (its queue and KV-cache usage; /get_load for workers without it)"),
        FlagSpec("disable-load-monitoring", .bool, .bool(false), group: "Worker load",
                 "Poll worker loads only when a decision reads them (overload protection, power_of_two); by default every worker is polled from registration on"),
        FlagSpec("worker-overload-waiting-requests", .int, .int(8), group: "Worker load",
                 "Waiting requests (summed over DP ranks) at or above which a worker is overloaded and left out of routing while another worker is under the thresholds (at least 1)"),
        FlagSpec("worker-overload-token-usage", .double, .double(0.8), group: "Worker load",
                 "Mean KV-cache token usage at or above which a worker is overloaded and left out of routing while another worker is under the thresholds (above 0, at most 1)"),
        FlagSpec("worker-overload-protection", .bool, .bool(false), group: "Worker load",
                 "Overload protection is on by default; this flag keeps it on and is accepted so older command lines still parse"),
        FlagSpec("disable-worker-overload-protection", .bool, .bool(false), group: "Worker load",
                 "Switch worker overload protection off: no worker is left out for its queue or KV usage"),
        FlagSpec("worker-stall-secs", .int, .int(2), group: "Worker load",
                 "Seconds without any contact from a worker (a response, a probe, a load poll answered) after which a call that gets no answer at all leaves it out of routing until it answers again (0: never)"),
        FlagSpec("worker-wedge-secs", .int, .int(3), group: "Worker load",
                 "Seconds without a head, token or answer from a worker with requests in flight whose pile grew or is four deep, after which it gets no new requests until it produces something (then one at a time once its requests are gone; 0: never)"),
        FlagSpec("worker-stale-secs", .int, .int(15), group: "Worker load",
                 "The reference's exclusion of workers whose KV-event stream stops pushing load records; smg subscribes to no such stream, so no worker is judged by it (accepted and checked)"),
        FlagSpec("worker-overload-shed", .bool, .bool(false), group: "Worker load",
                 "When every worker a request could use is overloaded, answer 503 worker_overload_protection_shed with Retry-After (the poll interval) instead of routing to the least loaded one"),

        // PD disaggregation
        FlagSpec("pd-disaggregation", .bool, .bool(false), group: "PD disaggregation", "Prefill/decode disaggregated mode"),
        FlagSpec("prefill", .urlWithOptionalPort, .list([]), group: "PD disaggregation", "Prefill worker: URL [BOOTSTRAP_PORT|none] (repeatable)"),
        FlagSpec("decode", .urlWithOptionalPort, .list([]), group: "PD disaggregation", "Decode worker URL (repeatable)"),
        FlagSpec("prefill-policy", .string, nil, group: "PD disaggregation", "Policy for prefill workers (default: --policy)"),
        FlagSpec("decode-policy", .string, nil, group: "PD disaggregation", "Policy for decode workers (default: --policy)"),

        // Worker startup
        FlagSpec("worker-startup-timeout-secs", .int, .int(1800), group: "Worker startup", "Seconds to wait for start-up workers"),
        FlagSpec("worker-startup-check-interval", .int, .int(30), group: "Worker startup", "Seconds between worker start-up checks"),

        // Service discovery
        FlagSpec("service-discovery", .bool, .bool(false), group: "Service discovery", "Discover workers from Kubernetes pods (the older spelling of --discovery-provider kubernetes)"),
        FlagSpec("discovery-provider", .string, nil, group: "Service discovery",
                 "Worker discovery: kubernetes (pods by --selector) or file (--discovery-file). Give this or --service-discovery, not both"),
        FlagSpec("discovery-file", .string, nil, group: "Service discovery",
                 "JSON manifest of workers for --discovery-provider file ({\"version\": 1, \"workers\": [{\"url\": …}]}); it may be created after start-up"),
        FlagSpec("discovery-check-interval-secs", .int, .int(30), group: "Service discovery",
                 "Seconds between rereads of --discovery-file, which is also reread within a second of changing"),
        FlagSpec("selector", .list, .list([]), group: "Service discovery", "Label selector of worker pods: key=value, every pair must match (space-separated)"),
        FlagSpec("service-discovery-namespace", .string, nil, group: "Service discovery", "Namespace whose pods are watched (default: all namespaces, which needs a ClusterRole)"),
        FlagSpec("service-discovery-port", .int, .int(80), group: "Service discovery", "Port of the worker on each discovered pod (http://POD_IP:PORT)"),
        FlagSpec("prefill-selector", .list, .list([]), group: "Service discovery", "Label selector of prefill pods in PD mode (key=value …)"),
        FlagSpec("decode-selector", .list, .list([]), group: "Service discovery", "Label selector of decode pods in PD mode (key=value …)"),
        FlagSpec("bootstrap-port-annotation", .string, .string("sglang.ai/bootstrap-port"), group: "Service discovery",
                 "Pod annotation holding a prefill pod's KV bootstrap port"),
        FlagSpec("kv-connector-annotation", .string, .string("smg.ai/kv-connector"), group: "Service discovery",
                 "Pod annotation whose value becomes the discovered worker's kv_connector label (vLLM KV connector)"),
        FlagSpec("kv-engine-id-annotation", .string, .string("smg.ai/kv-engine-id"), group: "Service discovery",
                 "Pod annotation whose value becomes the discovered worker's kv_engine_id label"),
        FlagSpec("router-selector", .list, .list([]), group: "Service discovery",
                 "Label selector of router pods: their pod IPs at --mesh-port become mesh peers (needs --enable-mesh; POD_NAME/POD_IP tell a router which pod it is)"),
        FlagSpec("model-id-from", .string, nil, group: "Service discovery",
                 "A discovered worker's model id from its pod: namespace, label:<key> or annotation:<key> (a pod without it keeps the model its worker reports)"),

        // Tokenizer and parsers
        FlagSpec("model-path", .string, nil, group: "Tokenizer", status: .notBuilt(tokenizer), "HuggingFace model id or local path for the tokenizer"),
        FlagSpec("tokenizer-path", .string, nil, group: "Tokenizer", status: .notBuilt(tokenizer), "Explicit tokenizer path"),
        FlagSpec("chat-template", .string, nil, group: "Tokenizer", status: .notBuilt(tokenizer), "Path to a chat template file"),
        FlagSpec("tokenizer-cache-enable-l0", .bool, .bool(false), group: "Tokenizer", status: .notBuilt(tokenizer), "Enable the L0 exact-match tokenizer cache"),
        FlagSpec("tokenizer-cache-l0-max-entries", .int, .int(10000), group: "Tokenizer", status: .notBuilt(tokenizer), "Entries in the L0 cache"),
        FlagSpec("tokenizer-cache-enable-l1", .bool, .bool(false), group: "Tokenizer", status: .notBuilt(tokenizer), "Enable the L1 prefix tokenizer cache"),
        FlagSpec("tokenizer-cache-l1-max-memory", .int, .int(52_428_800), group: "Tokenizer", status: .notBuilt(tokenizer), "Bytes of memory for the L1 cache"),
        FlagSpec("reasoning-parser", .string, nil, group: "Tokenizer", status: .notBuilt(tokenizer), "Parser for reasoning models (deepseek-r1, qwen3, ...)"),
        FlagSpec("tool-call-parser", .string, nil, group: "Tokenizer", status: .notBuilt(tokenizer), "Parser for tool calls (json, qwen, ...)"),
        FlagSpec("mcp-config-path", .string, nil, group: "Tokenizer", status: .notBuilt(tokenizer), "MCP server configuration file"),
        FlagSpec("backend", .string, .string("sglang"), group: "Core", "Worker backend: sglang, vllm (plain HTTP proxying); trtllm, openai, anthropic not built yet"),

        // History
        FlagSpec("history-backend", .string, .string("memory"), group: "History", "memory, none, redis, postgres (oracle is not built)"),
        FlagSpec("history-memory-max-responses", .int, .int(10_000), group: "History", "Most stored responses the memory backend keeps; the oldest go first"),
        FlagSpec("history-memory-max-items", .int, .int(100_000), group: "History", "Most conversation items the memory backend keeps; the oldest go first and leave their conversation"),
        FlagSpec("history-memory-retention-secs", .int, .int(86_400), group: "History", "Seconds the memory backend keeps a record (a conversation: after its last use); 0 keeps it until a bound drops it"),
        FlagSpec("history-memory-max-bytes", .int, .int(256 << 20), group: "History", "Bytes (as JSON) the memory backend holds at most, beyond the count bounds; the oldest records go first"),
        FlagSpec("history-max-item-bytes", .int, .int(4 << 20), group: "History", "Largest item (as JSON) any history backend stores: a larger one in a request is refused (400 item_too_large); an answer with a larger output item is not stored"),
        FlagSpec("oracle-wallet-path", .string, nil, env: "ATP_WALLET_PATH", group: "History", status: .notBuilt(history), "Oracle ATP wallet directory"),
        FlagSpec("oracle-tns-alias", .string, nil, env: "ATP_TNS_ALIAS", group: "History", status: .notBuilt(history), "Oracle TNS alias"),
        FlagSpec("oracle-dsn", .string, nil, env: "ATP_DSN", group: "History", status: .notBuilt(history), "Oracle connection descriptor"),
        FlagSpec("oracle-user", .string, nil, env: "ATP_USER", group: "History", status: .notBuilt(history), "Oracle user"),
        FlagSpec("oracle-password", .string, nil, env: "ATP_PASSWORD", group: "History", status: .notBuilt(history), "Oracle password"),
        FlagSpec("oracle-pool-min", .int, .int(1), env: "ATP_POOL_MIN", group: "History", status: .notBuilt(history), "Oracle pool minimum"),
        FlagSpec("oracle-pool-max", .int, .int(16), env: "ATP_POOL_MAX", group: "History", status: .notBuilt(history), "Oracle pool maximum"),
        FlagSpec("oracle-pool-timeout-secs", .int, .int(30), env: "ATP_POOL_TIMEOUT_SECS", group: "History", status: .notBuilt(history), "Oracle pool timeout"),
        FlagSpec("postgres-db-url", .string, nil, env: "POSTGRES_DB_URL", group: "History",
                 "PostgreSQL connection URL: postgres://user[:password]@host[:port]/database[?sslmode=disable|prefer|require|verify-full]"),
        FlagSpec("postgres-pool-max-size", .int, .int(16), env: "POSTGRES_POOL_MAX", group: "History", "PostgreSQL pool size (also --postgres-pool-max)"),
        FlagSpec("postgres-retention-days", .int, .int(30), env: "POSTGRES_RETENTION_DAYS", group: "History",
                 "Days PostgreSQL keeps a conversation (from its creation) or a stored response (-1 = forever), as --redis-retention-days does in Redis"),
        FlagSpec("postgres-op-timeout-secs", .int, .int(5), env: "POSTGRES_OP_TIMEOUT_SECS", group: "History",
                 "Bound in seconds on each call to the PostgreSQL store (pool wait, connect and the statement); past it the call is answered 503 history_unavailable"),
        FlagSpec("redis-url", .string, nil, env: "REDIS_URL", group: "History", "Redis connection URL: redis://[user:password@]host[:port][/db] (rediss:// over TLS), or redis[s]-sentinel://[password@]host[:26379][,host[:port]…][/db][?sentinel_password=…]#master for the master that Redis Sentinels name"),
        FlagSpec("redis-pool-max-size", .int, .int(16), env: "REDIS_POOL_MAX", group: "History", "Redis pool size (also --redis-pool-max)"),
        FlagSpec("redis-op-timeout-secs", .int, .int(5), env: "REDIS_OP_TIMEOUT_SECS", group: "History",
                 "Bound in seconds on each call to the Redis history store (connect and the command; a WAIT adds --redis-wait-timeout-ms); past it the call is answered 503 history_unavailable"),
        FlagSpec("session-store", .string, .string("memory"), group: "History", "Where manual routing-key assignments live: memory (this router and its mesh) or redis (--redis-url; survives restarts)"),
        FlagSpec("redis-retention-days", .int, .int(30), env: "REDIS_RETENTION_DAYS", group: "History", "Days to keep Redis data (-1 = forever)"),
        FlagSpec("redis-wait-replicas", .string, .string("auto"), group: "History",
                 "Replicas a history write must reach before the client is answered (Redis WAIT): 0 to 16, or auto (1 when the master has a replica, else 0); a write not confirmed in time is deferred and written again"),
        FlagSpec("redis-wait-timeout-ms", .int, .int(1000), group: "History", "How long a history write waits for --redis-wait-replicas (1 to 60000 ms)"),
        FlagSpec("enable-wasm", .bool, .bool(false), group: "History", status: .notBuilt("WebAssembly plugins (not planned yet)"), "WebAssembly support"),

        // Mesh
        FlagSpec("enable-mesh", .bool, .bool(false), group: "Mesh", "Join the HA mesh of routers: membership, replicated workers, sessions, cache trees and rate-limit shares"),
        FlagSpec("mesh-server-name", .string, nil, group: "Mesh", "Unique name of this mesh node (default: host name and mesh port)"),
        FlagSpec("mesh-host", .string, .string("0.0.0.0"), group: "Mesh", "Mesh bind address"),
        FlagSpec("mesh-port", .int, .int(39527), group: "Mesh", "Mesh port (UDP and TCP)"),
        FlagSpec("mesh-advertise-host", .string, nil, group: "Mesh", "Host other routers reach this one at (default: --mesh-host, or 127.0.0.1 for a wildcard bind)"),
        FlagSpec("mesh-peer-urls", .list, .list([]), group: "Mesh", "Peers host:port to join, retried until joined (space-separated)"),
        FlagSpec("mesh-key-file", .string, nil, group: "Mesh", "File with the cluster key: 64 hex characters per line, first line primary (smg mesh-keygen)"),
        FlagSpec("mesh-allow-unsealed", .bool, .bool(false), group: "Mesh", "Run a keyless (unsealed) mesh although credentials are configured: anyone who can send to the mesh port from a peer's address can change the fleet"),
        FlagSpec("mesh-key", .string, nil, group: "Mesh", "The cluster key itself (prefer SMG_MESH_KEY or --mesh-key-file: a flag shows in ps)"),

        // Request handling
        FlagSpec("request-timeout-secs", .int, .int(1800), group: "Request handling", "Maximum seconds for one proxied request"),
        FlagSpec("upstream-pool-idle-timeout-secs", .int, .int(3), group: "Request handling",
                 "Seconds a pooled connection to a worker may stay idle before it is closed; keep it below the workers' keep-alive (SGLang and vLLM: 5). 0 keeps idle connections"),
        FlagSpec("upstream-http2", .bool, .bool(false), group: "Request handling",
                 "Speak HTTP/2 to workers that answer it when registered (h2c by prior knowledge on cleartext, ALPN h2 over TLS): every call to a worker multiplexed on one connection per router thread; a worker that does not answer HTTP/2, or stops, is called over HTTP/1.1"),
        FlagSpec("sse-keepalive-secs", .int, .int(15), group: "Request handling",
                 "Seconds of worker silence after which a relayed event stream carries a keep-alive comment (only between events), so an idle-timeout proxy does not cut a stream waiting on a long prefill; 0 sends none"),
        FlagSpec("shutdown-grace-period-secs", .int, .int(180), group: "Request handling", "Seconds in-flight requests get to finish on SIGTERM or after an in-place upgrade"),
        FlagSpec("takeover-socket", .string, nil, group: "Request handling", "Unix socket for in-place upgrades: a router started while another serves behind this path takes its listening sockets, workers and mesh name, and the other drains and exits; each listens here for its own successor (SIGUSR2 starts one)"),
        FlagSpec("max-payload-size", .int, .int(536_870_912), group: "Request handling", "Maximum request body in bytes (413 above)"),
        FlagSpec("max-responses-payload-size", .int, .int(16 << 20), group: "Request handling", "Maximum body of /v1/responses and /v1/conversations requests in bytes, which the router parses itself (413 above)"),
        FlagSpec("max-batch-size", .int, .int(128), group: "Request handling", "Most requests one body may stand for: n, best_of, a list of generate texts or input_ids, a list of completion prompts (400 above)"),
        FlagSpec("header-read-timeout-secs", .int, .int(10), group: "Request handling", "Seconds from a request's first byte to the end of its head"),
        FlagSpec("body-idle-timeout-secs", .int, .int(30), group: "Request handling", "Seconds a request body may pause between pieces"),
        FlagSpec("body-timeout-secs", .int, .int(300), group: "Request handling", "Seconds a whole request body may take, however steadily it trickles in"),
        FlagSpec("stream-body-stall-timeout-secs", .int, .int(300), group: "Request handling",
                 "The reference's stall timeout for request bodies streamed to a worker as they arrive; smg reads every body whole before routing, so --body-idle-timeout-secs and --body-timeout-secs end a stalled body (accepted and checked)"),
        FlagSpec("keep-alive-timeout-secs", .int, .int(60), group: "Request handling", "Seconds an idle client connection stays open"),
        FlagSpec("max-client-connections", .int, .int(8192), group: "Request handling", "Client connections open at once (503 and close above)"),
        FlagSpec("max-connections-per-client", .int, .int(2048), group: "Request handling", "Connections one client IP address may hold open (503 and close above; 0: no cap)"),
        FlagSpec("cors-allowed-origins", .list, .list([]), group: "Request handling", "Origins allowed by CORS (space-separated; * for any)"),
        FlagSpec("request-id-headers", .list, .list(["x-request-id", "x-correlation-id", "x-trace-id", "request-id"]), group: "Request handling", "Headers checked, in order, for a request id"),

        // Rate limiting
        FlagSpec("max-concurrent-requests", .int, .int(-1), group: "Rate limiting", "Cap on in-flight inference requests (-1 = unlimited)"),
        FlagSpec("queue-size", .int, .int(100), group: "Rate limiting", "Requests waiting when the cap is reached"),
        FlagSpec("queue-timeout-secs", .int, .int(60), group: "Rate limiting", "Seconds a request may wait in the queue"),
        FlagSpec("rate-limit-tokens-per-second", .int, nil, group: "Rate limiting", "Token bucket refill rate (default: max-concurrent-requests)"),

        // Retries
        FlagSpec("retry-max-retries", .int, .int(5), group: "Retries", "Maximum retry attempts"),
        FlagSpec("retry-initial-backoff-ms", .int, .int(50), group: "Retries", "Initial backoff (ms)"),
        FlagSpec("retry-max-backoff-ms", .int, .int(30000), group: "Retries", "Maximum backoff (ms)"),
        FlagSpec("retry-backoff-multiplier", .double, .double(1.5), group: "Retries", "Backoff multiplier"),
        FlagSpec("retry-jitter-factor", .double, .double(0.2), group: "Retries", "Jitter factor (0.0-1.0)"),
        FlagSpec("disable-retries", .bool, .bool(false), group: "Retries", "Disable automatic retries"),

        // Circuit breaker
        FlagSpec("cb-failure-threshold", .int, .int(10), group: "Circuit breaker", "Failures before the circuit opens"),
        FlagSpec("cb-success-threshold", .int, .int(3), group: "Circuit breaker", "Successes in half-open before it closes"),
        FlagSpec("cb-timeout-duration-secs", .int, .int(60), group: "Circuit breaker", "Seconds open before half-open"),
        FlagSpec("cb-window-duration-secs", .int, .int(120), group: "Circuit breaker", "Window for counting failures"),
        FlagSpec("disable-circuit-breaker", .bool, .bool(false), group: "Circuit breaker", "Disable the per-worker circuit breakers"),

        // Health checks
        FlagSpec("health-failure-threshold", .int, .int(3), group: "Health checks", "Failures before a worker is unhealthy"),
        FlagSpec("health-success-threshold", .int, .int(2), group: "Health checks", "Successes before a worker is healthy again"),
        FlagSpec("health-check-timeout-secs", .int, .int(5), group: "Health checks", "Health check timeout"),
        FlagSpec("health-check-interval-secs", .int, .int(60), group: "Health checks", "Seconds between health checks"),
        FlagSpec("health-check-endpoint", .string, .string("/health"), group: "Health checks", "Worker health path"),
        FlagSpec("disable-health-check", .bool, .bool(false), group: "Health checks", "Disable worker health checks (workers count as healthy)"),

        // Metrics
        FlagSpec("prometheus-port", .int, .int(29000), group: "Metrics", "Port of the /metrics server (0 = any free port)"),
        FlagSpec("prometheus-host", .string, .string("0.0.0.0"), group: "Metrics", "Bind address of the /metrics server"),
        FlagSpec("prometheus-duration-buckets", .list, .list([]), group: "Metrics", "Histogram buckets in seconds (space-separated)"),

        // Tracing
        FlagSpec("enable-trace", .bool, .bool(false), group: "Tracing", "Export OpenTelemetry traces of requests (OTLP/gRPC) and pass W3C traceparent on to workers"),
        FlagSpec("otlp-traces-endpoint", .string, .string("localhost:4317"), group: "Tracing", "OTLP/gRPC collector host:port (with --enable-trace)"),
        FlagSpec("otlp-traces-sample-ratio", .double, .double(1.0), group: "Tracing", "Share of new traces recorded, 0.0-1.0; a client's sampled flag is followed either way"),

        // TLS and auth
        FlagSpec("tls-cert-path", .string, nil, group: "Security", "Server certificate chain (PEM): HTTPS on the API port"),
        FlagSpec("tls-key-path", .string, nil, group: "Security", "Server private key (PEM, RSA or ECDSA)"),
        FlagSpec("client-cert-path", .string, nil, group: "Security", "Client certificate (PEM) for mutual TLS to https workers and rediss:// Redis"),
        FlagSpec("client-key-path", .string, nil, group: "Security", "Client private key (PEM) for mutual TLS to https workers and rediss:// Redis"),
        FlagSpec("ca-cert-paths", .list, .list([]), group: "Security", "CA certificates (PEM) https workers and rediss:// Redis are verified against (default: the system store)"),
        FlagSpec("api-key", .string, nil, group: "Security", "API key for inference routes and worker authorization"),
        FlagSpec("tenant-api-key", .list, .list([]), group: "Security", "Inference keys that each name a tenant, TENANT_ID:KEY (repeatable); stored conversations and responses belong to their tenant"),
        FlagSpec("trust-tenant-header", .bool, .bool(false), group: "Security", "Take the caller's tenant from --tenant-header-name (set by a gateway in front); a tenant key still wins"),
        FlagSpec("tenant-header-name", .string, .string("x-smg-tenant-id"), group: "Security", "The header that names the tenant with --trust-tenant-header"),
        FlagSpec("control-plane-api-keys", .list, .list([]), env: "CONTROL_PLANE_API_KEYS", group: "Security", "Control plane keys id:name:role:key"),
        FlagSpec("jwt-issuer", .string, nil, env: "JWT_ISSUER", group: "Security", "OIDC issuer URL"),
        FlagSpec("jwt-audience", .string, nil, env: "JWT_AUDIENCE", group: "Security", "Expected audience"),
        FlagSpec("jwt-jwks-uri", .string, nil, env: "JWT_JWKS_URI", group: "Security", "JWKS URI"),
        FlagSpec("jwt-allow-http", .bool, .bool(false), group: "Security", "Fetch the issuer's keys over plain http:// from another host (refused otherwise: anyone on the path could replace them)"),
        FlagSpec("jwt-role-claim", .string, .string("roles"), group: "Security", "JWT claim holding the role"),
        FlagSpec("jwt-role-mapping", .list, .list([]), group: "Security", "IDP role = gateway role mappings"),
        FlagSpec("audit-log-level", .string, .string("info"), group: "Security", "Level of the audit log, apart from --log-level: info (changes, refusals, history deletions, fleet changes from the mesh) or debug (allowed reads too)"),
        FlagSpec("disable-audit-logging", .bool, .bool(false), group: "Security", "Disable audit logging"),
    ]

    static let byName: [String: FlagSpec] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// The reference gateway 1.13's other spellings of a flag, beside the configuration reference's: the same flag
    /// on the command line and in a config file (its environment variables are the flag's own).
    static let aliases: [String: String] = [
        "redis-pool-max": "redis-pool-max-size",
        "postgres-pool-max": "postgres-pool-max-size",
    ]

    /// The flag an alias stands for; any other name as it is.
    static func canonical(_ name: String) -> String { aliases[name] ?? name }

    public static func spec(_ name: String) -> FlagSpec? { byName[canonical(name)] }
}
