/// What a policy may know about one worker at the moment of a decision: a read-only value
/// taken from the router's registry. Policies never see sockets, clocks or the mesh.
public struct WorkerCandidate: Sendable, Equatable {
    /// Stable identity (the registry's worker id).
    public var id: String
    public var url: String
    /// Healthy and not draining: may receive new requests.
    public var isAvailable: Bool
    /// Requests the router has in flight to this worker right now.
    public var inFlight: Int

    public init(id: String, url: String, isAvailable: Bool = true, inFlight: Int = 0) {
        self.id = id
        self.url = url
        self.isAvailable = isAvailable
        self.inFlight = inFlight
    }
}

/// What a policy may know about the request being routed.
public struct RoutingRequest: Sendable {
    /// The text that identifies the prompt's prefix (chat messages, prompt, text, …), if any.
    public var routingText: String?
    /// `X-SMG-Routing-Key`, if the client sent one.
    public var routingKey: String?

    public init(routingText: String? = nil, routingKey: String? = nil) {
        self.routingText = routingText
        self.routingKey = routingKey
    }
}
