import Foundation
import Synchronization

/// `--discovery-provider file`: keeps the workers `--discovery-file` lists registered, as the
/// reference gateway 1.13 does.
///
/// The file is looked at every second (size, modification time, inode: a file replaced by a
/// rename, as editors, config management and Kubernetes ConfigMap volumes do, counts as
/// changed) and read when it changed, and read anyway every `--discovery-check-interval-secs`.
/// Each good read is reconciled with the workers this router registered from the file (label
/// `smg.ai/discovery-provider: file`): a listed worker not registered is added; one no longer
/// listed is removed (it leaves routing at once, its requests in flight finish); one whose
/// entry changed (model, type, bootstrap port, KV fields) is registered anew. A worker
/// registered otherwise (`--worker-urls`, `POST /workers`) is left alone, listed or not.
/// Changes reach the other routers of the mesh as API changes do: give every router the same
/// manifest (or discover on one of them).
///
/// A file that is missing, unreadable or invalid changes nothing: the last good manifest stays
/// (a typo must not empty the fleet), and the problem is logged once until it changes.
final class FileDiscovery: Sendable {
    let path: String
    let intervalMs: UInt64
    private let state: RouterState

    private struct Books {
        /// What the file looked like at the last read (nil: not read yet, or missing).
        var stamp: Stamp?
        var lastReadMs: UInt64 = 0
        var reading = false
        /// The problem logged last, so a lasting one is logged once.
        var lastProblem: String?
        var lastCount: Int?
    }
    /// What a file looked like, cheaply: its size, modification time and inode.
    private struct Stamp: Equatable, Sendable {
        var size: Int
        var modified: Date
        var inode: Int
    }
    private let books = Mutex(Books())

    init(settings: RouterConfig.FileDiscoverySettings, state: RouterState) {
        path = settings.path
        intervalMs = UInt64(settings.intervalSecs) * 1000
        self.state = state
    }

    /// The periodic task's tick (every second): reads the file off the event loop when it
    /// changed or the interval passed; one read at a time.
    func tick(nowMs: UInt64) {
        let stamp = Self.stamp(of: path)
        let due: Bool = books.withLock { b in
            guard !b.reading, stamp != b.stamp || nowMs >= b.lastReadMs + intervalMs || b.lastReadMs == 0 else { return false }
            b.reading = true
            return true
        }
        guard due else { return }
        Task { [self] in
            read(stamp: stamp, nowMs: nowMs)
        }
    }

    /// The tick's work, off the event loop: reads the manifest (whose stamp the tick just took)
    /// and applies it.
    private func read(stamp: Stamp?, nowMs: UInt64) {
        defer { books.withLock { b in b.reading = false; b.lastReadMs = nowMs; b.stamp = stamp } }
        guard stamp != nil else { return problem("missing", "discovery manifest \(path) does not exist (yet); keeping the workers discovered so far") }
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path), options: .uncached)
        } catch {
            return problem("unreadable", "cannot read discovery manifest \(path): \(error.localizedDescription)")
        }
        let manifest: DiscoveryManifest
        do {
            manifest = try DiscoveryManifest.parse(bytes)
        } catch {
            return problem("invalid", "invalid discovery manifest \(path): \(error); keeping the last good one")
        }
        let changed = books.withLock { b in
            defer { b.lastProblem = nil; b.lastCount = manifest.workers.count }
            return b.lastProblem != nil || b.lastCount != manifest.workers.count
        }
        state.metrics.discoveryRead("ok")
        if changed { state.log(.workers).info("discovery manifest read", metadata: ["path": "\(path)", "workers": "\(manifest.workers.count)"]) }
        apply(manifest)
    }

    /// Brings the workers registered from the file in line with `manifest`.
    func apply(_ manifest: DiscoveryManifest) {
        let wanted = Dictionary(uniqueKeysWithValues: manifest.workers.map { ($0.url.canonical, $0.worker) })
        for w in state.registry.all where w.labels[DiscoveredWorker.providerLabel] == "file" && wanted[w.url.canonical] == nil {
            DiscoveredWorker.settle(w.url.canonical, wanted: nil, provider: "file", state: state, source: "file discovery")
        }
        for (url, worker) in wanted { DiscoveredWorker.settle(url, wanted: worker, provider: "file", state: state, source: "file discovery") }
    }

    private func problem(_ result: String, _ message: String) {
        state.metrics.discoveryRead(result)
        let fresh = books.withLock { b in
            defer { b.lastProblem = message }
            return b.lastProblem != message
        }
        if fresh { state.log(.workers).warning("\(message)") }
    }

    private static func stamp(of path: String) -> Stamp? {
        guard let a = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        return Stamp(size: (a[.size] as? NSNumber)?.intValue ?? -1, modified: a[.modificationDate] as? Date ?? .distantPast,
                     inode: (a[.systemFileNumber] as? NSNumber)?.intValue ?? -1)
    }
}
