/// The parts of Kubernetes API objects that discovery reads: a Pod's metadata and status, a
/// PodList page, a watch event, and a Status (what the API server answers an error with).
///
/// Read leniently where the API allows growth (any field not named here is ignored, as every
/// Kubernetes client does) and strictly where discovery depends on a field: an object without
/// a name, namespace or resourceVersion is not a pod this router can follow, and is refused
/// rather than guessed at. Sizes are bounded by the client that reads them (`KubeAPI`).
struct KubePod: Equatable, Sendable {
    var namespace: String
    var name: String
    var uid: String
    var resourceVersion: String
    var labels: [String: String]
    var annotations: [String: String]
    /// `status.podIP`: nil until the pod has been scheduled and given an address.
    var podIP: String?
    /// `status.phase`: Pending, Running, Succeeded, Failed or Unknown.
    var phase: String?
    /// The `Ready` condition is `True`: every container passed its readiness probe.
    var ready: Bool
    /// `metadata.deletionTimestamp` is set: the pod is being shut down (its grace period runs)
    /// and must get no new requests, though it may still be Ready for a moment.
    var terminating: Bool

    /// Where the pod is in the cluster: namespace/name (unique at any one time).
    var key: String { "\(namespace)/\(name)" }

    /// A pod that should serve: Running, Ready, addressed, and not shutting down.
    var serving: Bool { phase == "Running" && ready && !terminating && podIP != nil }

    init(namespace: String, name: String, uid: String = "", resourceVersion: String, labels: [String: String] = [:], annotations: [String: String] = [:],
         podIP: String? = nil, phase: String? = nil, ready: Bool = false, terminating: Bool = false) {
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.labels = labels
        self.annotations = annotations
        self.podIP = podIP
        self.phase = phase
        self.ready = ready
        self.terminating = terminating
    }

    init(_ json: JSONValue) throws(KubeDecodingError) {
        guard let object = json.object else { throw KubeDecodingError("a pod is not a JSON object") }
        if let kind = object["kind"]?.string, kind != "Pod" { throw KubeDecodingError("expected a Pod, got a \(kind.prefix(40))") }
        guard let meta = object["metadata"]?.object else { throw KubeDecodingError("a pod without metadata") }
        guard let name = meta["name"]?.string, !name.isEmpty else { throw KubeDecodingError("a pod without metadata.name") }
        guard let resourceVersion = meta["resourceVersion"]?.string, !resourceVersion.isEmpty else {
            throw KubeDecodingError("pod \(name.prefix(64)) has no metadata.resourceVersion")
        }
        self.name = name
        self.resourceVersion = resourceVersion
        namespace = meta["namespace"]?.string ?? "default"
        uid = meta["uid"]?.string ?? ""
        labels = try Self.strings(meta["labels"], "metadata.labels")
        annotations = try Self.strings(meta["annotations"], "metadata.annotations")
        terminating = meta["deletionTimestamp"].map { $0 != .null } ?? false
        let status = object["status"]?.object ?? [:]
        podIP = status["podIP"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        phase = status["phase"]?.string
        ready = (status["conditions"]?.array ?? []).contains { c in
            c.object?["type"]?.string == "Ready" && c.object?["status"]?.string == "True"
        }
    }

    private static func strings(_ value: JSONValue?, _ field: String) throws(KubeDecodingError) -> [String: String] {
        guard let value, value != .null else { return [:] }
        guard let object = value.object else { throw KubeDecodingError("\(field) is not an object") }
        var out: [String: String] = [:]
        for (k, v) in object {
            guard let s = v.string else { throw KubeDecodingError("\(field).\(k.prefix(64)) is not a string") }
            out[k] = s
        }
        return out
    }
}

/// What the API server answers an error with (`kind: Status`), also inside a watch's `ERROR`
/// event: `code` 410 with reason `Expired` or `Gone` means the resourceVersion asked for is
/// older than the server keeps, and the client must list again.
struct KubeStatus: Equatable, Sendable, CustomStringConvertible {
    var code: Int?
    var reason: String?
    var message: String?

    init(code: Int?, reason: String? = nil, message: String? = nil) {
        self.code = code
        self.reason = reason
        self.message = message
    }

    init(_ json: JSONValue?) {
        let object = json?.object ?? [:]
        code = object["code"]?.int
        reason = object["reason"]?.string
        message = object["message"]?.string
    }

    /// The resourceVersion asked for is too old (or a list's continue token expired).
    var expired: Bool { code == 410 || reason == "Expired" || reason == "Gone" }

    var description: String {
        [code.map { "\($0)" }, reason, message.map { String($0.prefix(200)) }].compactMap { $0 }.joined(separator: " ")
    }
}

/// One line of a watch stream (`{"type": …, "object": …}`).
enum KubeWatchEvent: Equatable, Sendable {
    case added(KubePod)
    case modified(KubePod)
    case deleted(KubePod)
    /// Nothing changed up to this resourceVersion (sent when asked with `allowWatchBookmarks`):
    /// a later watch may start here instead of at an older version that may have expired.
    case bookmark(resourceVersion: String)
    case error(KubeStatus)

    static func parse(_ line: some Collection<UInt8>) throws(KubeDecodingError) -> KubeWatchEvent {
        guard let json = JSONValue.parse(line), let event = json.object else { throw KubeDecodingError("a watch event that is not a JSON object") }
        guard let type = event["type"]?.string else { throw KubeDecodingError("a watch event without a type") }
        let object = event["object"]
        switch type {
        case "ADDED": return .added(try KubePod(object ?? .null))
        case "MODIFIED": return .modified(try KubePod(object ?? .null))
        case "DELETED": return .deleted(try KubePod(object ?? .null))
        case "BOOKMARK":
            guard let rv = object?.object?["metadata"]?.object?["resourceVersion"]?.string, !rv.isEmpty else {
                throw KubeDecodingError("a BOOKMARK without metadata.resourceVersion")
            }
            return .bookmark(resourceVersion: rv)
        case "ERROR": return .error(KubeStatus(object))
        default: throw KubeDecodingError("unknown watch event type \(type.prefix(40))")
        }
    }
}

/// One page of `GET …/pods` (`kind: PodList`).
struct KubePodList: Equatable, Sendable {
    var resourceVersion: String
    /// `metadata.continue`: more pages follow; nil on the last.
    var continueToken: String?
    var items: [KubePod]

    static func parse(_ bytes: some Collection<UInt8>) throws(KubeDecodingError) -> KubePodList {
        guard let json = JSONValue.parse(bytes), let list = json.object else { throw KubeDecodingError("a pod list that is not a JSON object") }
        if let kind = list["kind"]?.string, kind != "PodList" { throw KubeDecodingError("expected a PodList, got a \(kind.prefix(40))") }
        guard let meta = list["metadata"]?.object, let rv = meta["resourceVersion"]?.string, !rv.isEmpty else {
            throw KubeDecodingError("a pod list without metadata.resourceVersion")
        }
        let token = meta["continue"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        var items: [KubePod] = []
        for item in list["items"]?.array ?? [] { items.append(try KubePod(item)) }
        return KubePodList(resourceVersion: rv, continueToken: token, items: items)
    }
}

struct KubeDecodingError: Error, Equatable, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
