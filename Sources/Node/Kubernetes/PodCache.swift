/// One selector's pods as the API server last told them, kept as a Kubernetes reflector keeps
/// them: a full list sets the pods and the resourceVersion the watch continues from; each watch
/// event moves both; a `410` (the version is older than the server keeps) empties the version so
/// the next step is a list again, from which the difference to what was known is worked out, so
/// no change is lost across it.
///
/// Pure: no IO, no clock. `PodWatcher` feeds it what the server sends, and hands the changes it
/// returns to discovery.
struct PodCache: Sendable {
    struct Change: Equatable, Sendable {
        /// The pod before (nil: new to this router).
        var old: KubePod?
        /// The pod after (nil: deleted, or no longer matching the selector).
        var new: KubePod?
    }

    enum Outcome: Equatable, Sendable {
        case changes([Change])
        /// List again: the watch's version expired.
        case relist(KubeStatus)
        /// The server sent an error event that is not an expiry: watch again after a pause.
        case failed(KubeStatus)
    }

    let selector: KubeSelector
    private(set) var pods: [String: KubePod] = [:]
    /// Where the next watch starts; nil: list first.
    private(set) var resourceVersion: String?

    init(selector: KubeSelector) { self.selector = selector }

    /// A complete list (every page): the pods it holds replace those known, and the changes say
    /// how (pods gone while no watch ran come out as deletions).
    mutating func listed(_ items: [KubePod], resourceVersion: String) -> [Change] {
        var next: [String: KubePod] = [:]
        for pod in items where selector.matches(pod.labels) { next[pod.key] = pod }
        var changes: [Change] = []
        for (key, old) in pods where next[key] == nil { changes.append(Change(old: old, new: nil)) }
        for (key, pod) in next where pods[key] != pod { changes.append(Change(old: pods[key], new: pod)) }
        pods = next
        self.resourceVersion = resourceVersion
        return changes.sorted { ($0.new ?? $0.old)!.key < ($1.new ?? $1.old)!.key }
    }

    mutating func apply(_ event: KubeWatchEvent) -> Outcome {
        switch event {
        case .added(let pod), .modified(let pod):
            resourceVersion = pod.resourceVersion
            guard selector.matches(pod.labels) else { return .changes(remove(pod.key)) }
            let old = pods.updateValue(pod, forKey: pod.key)
            return .changes(old == pod ? [] : [Change(old: old, new: pod)])
        case .deleted(let pod):
            resourceVersion = pod.resourceVersion
            return .changes(remove(pod.key))
        case .bookmark(let version):
            resourceVersion = version
            return .changes([])
        case .error(let status):
            guard status.expired else { return .failed(status) }
            resourceVersion = nil
            return .relist(status)
        }
    }

    private mutating func remove(_ key: String) -> [Change] {
        pods.removeValue(forKey: key).map { [Change(old: $0, new: nil)] } ?? []
    }
}
