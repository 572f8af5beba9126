import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// `--service-discovery`: workers and fellow routers found as pods.
///
/// **Workers.** Each selector (`--selector`, or `--prefill-selector` and `--decode-selector` in
/// PD mode) is followed by a `PodWatcher`. A pod that is Running, Ready, addressed and not
/// terminating is a worker at `http://POD_IP:--service-discovery-port`; a prefill pod's bootstrap
/// port is its `--bootstrap-port-annotation`; `--model-id-from` names its model. A pod that stops
/// serving (NotReady, terminating, deleted, relabelled) has its worker removed at that event: it
/// leaves routing at once and its requests in flight finish. Workers from `--worker-urls` and
/// `POST /workers` are never touched.
///
/// **Several routers.** Discovered workers replicate over the mesh as any others, so a pod
/// discovered by two routers is one worker. A router removes a discovered worker when its own
/// watch saw the pod stop serving, and also a discovered worker whose pod its watch does not
/// know at all (one added by a router whose pods are gone, or whose selector differs) once that
/// has lasted `orphanGraceMs`: long enough that a peer's add, replicated before this router's
/// watch has seen the pod, is not undone. Give every router the same discovery flags.
///
/// **Routers.** `--router-selector` pods that are Running and not terminating (Ready is not
/// asked: a router's readiness may wait for the mesh) are the mesh's join targets, at their pod
/// IP and `--mesh-port`, besides `--mesh-peer-urls`. A router skips its own pod, known from the
/// downward API (`POD_NAME`, `POD_IP`).
final class KubernetesDiscovery: Service, Sendable {
    let settings: KubernetesSettings
    private let state: RouterState
    private let watchers: [(watcher: PodWatcher, role: WorkerRole?)]
    private let ownPod: (name: String?, ip: String?)
    private let staticPeers: [String]
    private let meshPort: Int
    /// Discovered workers whose pods no watch here knows, since when (monotonic ms). Its lock
    /// is held through every change to the registry discovery makes, so a sweep that read the
    /// pods a moment ago cannot undo a change a watch applied since.
    private let orphans = Mutex<[String: UInt64]>([:])
    /// The router peers last handed to the mesh (logged when they change).
    private let lastPeers = Mutex<[String]?>(nil)
    static let orphanGraceMs: UInt64 = 15_000
    static let provider = "kubernetes"

    init(settings: KubernetesSettings, state: RouterState, api: KubeAPI, environment: [String: String] = ProcessInfo.processInfo.environment,
         watchSeconds: ClosedRange<Int> = 300...600) {
        self.settings = settings
        self.state = state
        ownPod = (environment["POD_NAME"].flatMap { $0.isEmpty ? nil : $0 }, environment["POD_IP"].flatMap { $0.isEmpty ? nil : $0 })
        staticPeers = state.config.mesh?.peers ?? []
        meshPort = state.config.mesh?.port ?? 39527
        let roles: [(String, KubeSelector?, WorkerRole)] = [("workers", settings.workers, .regular), ("prefill", settings.prefill, .prefill),
                                                             ("decode", settings.decode, .decode)]
        var list: [(watcher: PodWatcher, role: WorkerRole?)] = []
        // The handlers reach this object through a box set below (the watchers exist first).
        let me = Mutex<KubernetesDiscovery?>(nil)
        for (name, selector, role) in roles {
            guard let selector else { continue }
            let watcher = PodWatcher(name: name, api: api, namespace: settings.namespace, selector: selector, log: state.log(.workers),
                                     metrics: state.metrics, watchSeconds: watchSeconds) { changes, pods, listed in
                me.withLock { $0 }?.workersChanged(role: role, changes: changes, pods: pods, listed: listed)
            }
            list.append((watcher, role))
        }
        if let selector = settings.routers {
            let watcher = PodWatcher(name: "routers", api: api, namespace: settings.namespace, selector: selector, log: state.log(.mesh),
                                     metrics: state.metrics, watchSeconds: watchSeconds) { _, pods, _ in
                me.withLock { $0 }?.routersChanged(pods: pods)
            }
            list.append((watcher, nil))
        }
        watchers = list
        me.withLock { $0 = self }
    }

    func run() async throws {
        let log = state.log(.workers)
        log.info("kubernetes discovery started", metadata: [
            "api": "\(settings.namespace.map { "namespace \($0)" } ?? "all namespaces")",
            "watches": "\(watchers.map { "\($0.watcher.name)(\($0.watcher.selector))" }.joined(separator: " "))"])
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for (watcher, _) in self.watchers { group.addTask { await watcher.run() } }
                group.addTask {
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: .seconds(5)) } catch { return }
                        self.sweepOrphans(nowMs: MonotonicClock.nowMs())
                    }
                }
            }
        }
    }

    // MARK: workers

    /// The worker a pod should be, or nil when it should be none.
    func worker(for pod: KubePod, role: WorkerRole) -> DiscoveredWorker? {
        guard pod.serving, let url = url(of: pod) else { return nil }
        var port: Int?
        if role == .prefill, let text = pod.annotations[settings.bootstrapAnnotation], let p = Int(text.trimmingCharacters(in: .whitespaces)), (1...65535).contains(p) {
            port = p
        }
        // Pod metadata is the cluster's, not checked as the worker API checks what it is sent: a
        // value a worker may not hold (too long, a control character) is left out, not sent to
        // peers that would refuse it.
        let model = settings.modelIDFrom?.modelID(of: pod).flatMap { m in
            m.isEmpty || WorkerFields.problem(model: m, labels: nil, apiKey: nil) != nil ? nil : m
        }
        var kv: [String: String] = [:]
        for (label, annotation) in settings.kvAnnotations.sorted(by: { $0.key < $1.key }) {
            guard let value = pod.annotations[annotation], !value.isEmpty, WorkerFields.problem(model: nil, labels: [label: value], apiKey: nil) == nil else { continue }
            kv[label] = value
        }
        // namespace/name, unless a long pod name makes it longer than a label may be: the pod's uid.
        let id = pod.key.utf8.count <= WorkerFields.maxLabelLength ? pod.key : pod.uid
        return DiscoveredWorker(provider: Self.provider, id: id, url: url, role: role, bootstrapPort: port, modelID: model, extra: kv)
    }

    /// Where a pod's worker is (whether or not it serves): nil before it has an address.
    func url(of pod: KubePod) -> WorkerURL? {
        guard let ip = pod.podIP else { return nil }
        return try? WorkerURL(parsing: "http://\(ip.contains(":") ? "[\(ip)]" : ip):\(settings.port)")
    }

    private func workersChanged(role: WorkerRole, changes: [PodCache.Change], pods: [String: KubePod], listed: Bool) {
        orphans.withLock { since in
            apply(role: role, changes: changes)
            if listed { sweep(since: &since, nowMs: MonotonicClock.nowMs()) }
        }
    }

    private func apply(role: WorkerRole, changes: [PodCache.Change]) {
        for change in changes {
            let wanted = change.new.flatMap { worker(for: $0, role: role) }
            let newURL = wanted?.url.canonical ?? change.new.flatMap(url(of:))?.canonical
            if let old = change.old.flatMap(url(of:))?.canonical, old != newURL {
                DiscoveredWorker.settle(old, wanted: nil, provider: Self.provider, state: state, source: "kubernetes discovery")
            }
            if let newURL { DiscoveredWorker.settle(newURL, wanted: wanted, provider: Self.provider, state: state, source: "kubernetes discovery") }
        }
    }

    /// The full reconcile, every 5 s and after each list: a serving pod without its worker gets
    /// it (a peer that saw the pod stop a moment before this router saw it start may have
    /// removed it), a worker whose pod is known here but does not serve goes, and a discovered
    /// worker no watch here accounts for goes once that has lasted `orphanGraceMs`.
    func sweepOrphans(nowMs: UInt64) {
        orphans.withLock { sweep(since: &$0, nowMs: nowMs) }
    }

    private func sweep(since: inout [String: UInt64], nowMs: UInt64) {
        let workerWatchers = watchers.filter { $0.role != nil }
        guard !workerWatchers.isEmpty, workerWatchers.allSatisfy({ $0.watcher.synced }) else { return }
        var wanted: [String: DiscoveredWorker] = [:]
        var known: Set<String> = []
        for (watcher, role) in workerWatchers {
            for pod in watcher.pods.values {
                let w = worker(for: pod, role: role!)
                guard let u = w?.url.canonical ?? url(of: pod)?.canonical else { continue }
                known.insert(u)
                wanted[u] = w
            }
        }
        var remove: [String] = []
        var next: [String: UInt64] = [:]
        for w in state.registry.all where w.labels[DiscoveredWorker.providerLabel] == Self.provider && wanted[w.url.canonical] == nil {
            let u = w.url.canonical
            if known.contains(u) { remove.append(u); continue }
            let first = since[u] ?? nowMs
            if nowMs >= first + Self.orphanGraceMs { remove.append(u) } else { next[u] = first }
        }
        since = next
        for u in remove {
            state.log(.workers).info("discovered worker has no serving pod here; removing it", metadata: ["worker": "\(u)"])
            DiscoveredWorker.settle(u, wanted: nil, provider: Self.provider, state: state, source: "kubernetes discovery")
        }
        let registered = Set(state.registry.all.map(\.url.canonical))
        for (u, w) in wanted where !registered.contains(u) {
            DiscoveredWorker.settle(u, wanted: w, provider: Self.provider, state: state, source: "kubernetes discovery")
        }
    }

    // MARK: routers

    private func routersChanged(pods: [String: KubePod]) {
        guard let mesh = state.mesh?.service else { return }
        let peers = pods.values
            .filter { $0.phase == "Running" && !$0.terminating && $0.podIP != nil && $0.name != ownPod.name && $0.podIP != ownPod.ip }
            .map { pod in "\(pod.podIP!.contains(":") ? "[\(pod.podIP!)]" : pod.podIP!):\(meshPort)" }
            .sorted()
        let changed = lastPeers.withLock { last in
            defer { last = peers }
            return last != peers
        }
        guard changed else { return }
        mesh.setSeeds(staticPeers + peers)
        state.log(.mesh).info("mesh peers from router pods", metadata: ["peers": "\(peers.joined(separator: " "))", "count": "\(peers.count)"])
    }
}
