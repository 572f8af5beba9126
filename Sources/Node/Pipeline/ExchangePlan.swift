import NIOCore
import NIOHTTP1
import Policies

/// What the pipeline is to do with one request, decided before any worker is involved.
///
/// A plan sends the request to one worker chosen by the model's policy, with retries
/// elsewhere before the first response byte, or (PD disaggregation) to a prefill and a decode
/// worker chosen together, each attempt a new pair. (A Responses turn is such a plan too: a chat
/// completion, translated by its `ExchangeClient`.) A new way of serving a request adds a `Kind`,
/// the events it needs in `ExchangeStateMachine` and their execution in `Exchange`, not a handler.
struct ExchangePlan {
    enum Kind: Equatable {
        /// One worker, chosen by `registry.select` for `model`.
        case singleWorker
        /// A prefill and a decode worker, each chosen by its own policy; both are sent the body
        /// with `BootstrapFields`, the decode worker's answer is relayed and the prefill's
        /// drained (the attempt's prefill half). `batchSize`: the request is a batch of that many (a room
        /// each); `mergeLogprobs`: `/generate` with `return_logprob`, whose prompt logprobs come
        /// from the prefill (`PDLogprobs`).
        case prefillDecode(batchSize: Int?, mergeLogprobs: Bool)
    }

    var kind = Kind.singleWorker
    /// The endpoint label in metrics (`chat_completions`, `get_server_info`, …).
    var endpoint: String
    /// The model the request names; nil: any worker.
    var model: String?
    var stream = false
    /// What the policy routes on (prompt text, routing key, pinned worker).
    var routing = RoutingRequest()
    /// Inference requests wait for admission and record their routing decision; the GETs any
    /// worker may answer (`/get_server_info`, …) do neither.
    var isInference: Bool
    /// The client's request head and body, sent to the worker after `UpstreamHeaders.request`.
    var head: HTTPRequestHead
    var body: ByteBuffer
    /// The body is `{}` (members the router adds need no leading comma).
    var bodyIsEmptyObject = false
    var requestID: String
    /// The client's IP address, appended to `X-Forwarded-For` (nil for Unix sockets).
    var clientAddress: String?
    /// The request's spans, with `--enable-trace` (`RequestTrace`).
    var trace: RequestTrace?
}
