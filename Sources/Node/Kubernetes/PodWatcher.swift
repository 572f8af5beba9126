import Logging
import Synchronization

/// Follows one selector's pods for as long as the router runs: list (in pages of 500), then
/// watch from the list's resourceVersion with bookmarks, and again:
///
/// - a watch the server ends (its `timeoutSeconds`, 5 to 10 minutes) is opened again at once,
///   from the last version seen (an event's or a bookmark's);
/// - a broken watch (connection lost, an error event, an unreadable line) is opened again from
///   the last version after a pause that doubles from 0.5 s to 30 s with jitter;
/// - `410 Gone` (on the watch, as an `ERROR` event, or on a list page) lists again at once.
///
/// Each change is handed to `deliver` as it is applied, with whether it came from a list.
/// Logged: the first list, each re-list and its reason, a failure streak's first error and its
/// end; not every retry.
final class PodWatcher: Sendable {
    /// What this watch finds, for logs and metrics: `workers`, `prefill`, `decode` or `routers`.
    let name: String
    let namespace: String?
    let selector: KubeSelector
    private let api: KubeAPI
    private let log: Logger
    private let metrics: RouterMetrics
    private let deliver: @Sendable (_ changes: [PodCache.Change], _ pods: [String: KubePod], _ listed: Bool) -> Void
    private let cache: Mutex<PodCache>
    /// The `timeoutSeconds` asked of each watch (randomised within, as client-go does, so many
    /// routers do not re-open their watches together).
    let watchSeconds: ClosedRange<Int>

    static let pageSize = 500

    init(name: String, api: KubeAPI, namespace: String?, selector: KubeSelector, log: Logger, metrics: RouterMetrics,
         watchSeconds: ClosedRange<Int> = 300...600,
         deliver: @escaping @Sendable (_ changes: [PodCache.Change], _ pods: [String: KubePod], _ listed: Bool) -> Void) {
        self.name = name
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.log = log
        self.metrics = metrics
        self.watchSeconds = watchSeconds
        self.deliver = deliver
        cache = Mutex(PodCache(selector: selector))
    }

    /// The pods known now.
    var pods: [String: KubePod] { cache.withLock { $0.pods } }

    /// Whether a list has succeeded (until then, no pod's absence means anything).
    var synced: Bool { listedOnce.load(ordering: .relaxed) }
    private let listedOnce = Atomic<Bool>(false)

    private struct Relist: Error { let reason: String }

    /// Runs until the task is cancelled.
    func run() async {
        var failures = 0
        var lastError = ""
        while !Task.isCancelled {
            // A watch that brought events before it broke was working: its break starts a new
            // streak (0.5 s), not the next step of an old one.
            var progressed = false
            do {
                if cache.withLock({ $0.resourceVersion == nil }) { try await list() }
                try await watchOnce(progressed: &progressed)
                if failures > 0 { log.info("kubernetes watch restored", metadata: ["watch": "\(name)", "after_failures": "\(failures)"]) }
                failures = 0
            } catch is CancellationError {
                return
            } catch let relist as Relist {
                metrics.kubeWatchRestart(name, "expired")
                log.info("kubernetes watch expired; listing the pods again", metadata: ["watch": "\(name)", "reason": "\(relist.reason)"])
            } catch {
                if Task.isCancelled { return }
                if progressed { failures = 0 }
                failures += 1
                metrics.kubeWatchRestart(name, "error")
                let text = "\(error)"
                if failures == 1 || (text != lastError && failures % 10 == 0) {
                    log.warning("kubernetes watch failed; retrying", metadata: ["watch": "\(name)", "error": "\(text.prefix(300))", "failures": "\(failures)"])
                }
                lastError = text
                do { try await Task.sleep(for: .milliseconds(Self.backoffMs(failures: failures, random: UInt64.random(in: 0...UInt64.max)))) } catch { return }
            }
        }
    }

    /// The pause after the `failures`th failure in a row: 0.5 s doubling to 30 s, ±20 %.
    static func backoffMs(failures: Int, random: UInt64) -> Int {
        let base = min(30_000, 500 << min(max(failures - 1, 0), 10))
        let spread = base / 5
        return base - spread + Int(random % UInt64(2 * spread + 1))
    }

    /// Lists every page; a page answered 410 (its continue token expired) starts the list over.
    private func list() async throws {
        var items: [KubePod] = []
        var token: String?
        var version = ""
        var restarts = 0
        repeat {
            var parameters = [("labelSelector", selector.description), ("limit", "\(Self.pageSize)")]
            if let token { parameters.append(("continue", token)) }
            let page: KubePodList
            do {
                page = try KubePodList.parse(try await api.get(KubeAPI.podsTarget(namespace: namespace, parameters), timeout: .seconds(60)))
            } catch let failure as KubeAPI.Failure where failure.expired && token != nil && restarts < 3 {
                metrics.kubeList(name, "expired")
                restarts += 1
                (items, token) = ([], nil)
                continue
            } catch {
                metrics.kubeList(name, "error")
                throw error
            }
            items += page.items
            token = page.continueToken
            version = page.resourceVersion
        } while token != nil
        metrics.kubeList(name, "ok")
        let (changes, pods) = cache.withLock { c in (c.listed(items, resourceVersion: version), c.pods) }
        let first = !listedOnce.exchange(true, ordering: .relaxed)
        if first { log.info("kubernetes pods listed", metadata: ["watch": "\(name)", "selector": "\(selector)", "namespace": "\(namespace ?? "(all)")", "pods": "\(pods.count)"]) }
        metrics.kubePods(name, pods.count)
        deliver(changes, pods, true)
    }

    /// One watch, until the server ends it; `progressed` is set once it brought an event.
    private func watchOnce(progressed: inout Bool) async throws {
        guard let from = cache.withLock({ $0.resourceVersion }) else { return }
        let seconds = Int.random(in: watchSeconds)
        let target = KubeAPI.podsTarget(namespace: namespace, [
            ("labelSelector", selector.description), ("watch", "1"), ("allowWatchBookmarks", "true"),
            ("resourceVersion", from), ("timeoutSeconds", "\(seconds)"),
        ])
        do {
            try await api.watch(target, timeout: .seconds(seconds + 30)) { line in
                let event = try KubeWatchEvent.parse(line)
                progressed = true
                metrics.kubeEvent(name, event.typeName)
                let (outcome, pods) = cache.withLock { c in (c.apply(event), c.pods) }
                switch outcome {
                case .changes(let changes):
                    if !changes.isEmpty {
                        metrics.kubePods(name, pods.count)
                        deliver(changes, pods, false)
                    }
                case .relist(let status): throw Relist(reason: "watch answered \(status)")
                case .failed(let status): throw KubeAPI.Failure(httpStatus: 200, status: status)
                }
            }
        } catch let failure as KubeAPI.Failure where failure.expired {
            cache.withLock { c in _ = c.apply(.error(failure.status.code == nil ? KubeStatus(code: 410) : failure.status)) }
            throw Relist(reason: "watch answered \(failure)")
        }
        metrics.kubeWatchRestart(name, "ended")
    }
}

extension KubeWatchEvent {
    var typeName: String {
        switch self {
        case .added: "added"
        case .modified: "modified"
        case .deleted: "deleted"
        case .bookmark: "bookmark"
        case .error: "error"
        }
    }
}
