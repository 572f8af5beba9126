/// What a worker does: answers whole requests, or one half of a disaggregated one. Prefill
/// workers compute the prompt's KV cache and hand it to a decode worker over their bootstrap
/// server; decode workers generate. `--pd-disaggregation` routes each request to one of each.
public enum WorkerRole: String, Sendable, CaseIterable {
    case regular, prefill, decode
}
