import Synchronization

/// One worker known to the router. Identity and settings are immutable; the counters the hot
/// path updates are atomics, so no lock is taken per request.
public final class Worker: Sendable {
    public let id: String
    public let url: WorkerURL
    /// The model this worker serves, learned from its `/v1/models` unless given when added.
    private let _modelID: Mutex<String?>
    public let workerType: String
    public let labels: [String: String]
    /// Set when the worker is being removed: it finishes what it has and gets nothing new.
    private let _draining = Atomic<Bool>(false)
    private let _healthy = Atomic<Bool>(true)
    private let _inFlight = Atomic<Int>(0)
    private let _served = Atomic<Int>(0)
    /// The worker's own load report (`/get_load`), -1 until one arrives.
    private let _reportedLoad = Atomic<Int>(-1)

    init(id: String, url: WorkerURL, modelID: String?, workerType: String = "regular", labels: [String: String] = [:]) {
        self.id = id
        self.url = url
        self._modelID = Mutex(modelID)
        self.workerType = workerType
        self.labels = labels
    }

    public var modelID: String? { _modelID.withLock { $0 } }
    func setModelID(_ m: String) { _modelID.withLock { $0 = m } }
    public var isDraining: Bool { _draining.load(ordering: .relaxed) }
    func markDraining() { _draining.store(true, ordering: .relaxed) }
    public var isHealthy: Bool { _healthy.load(ordering: .relaxed) }
    public var inFlight: Int { _inFlight.load(ordering: .relaxed) }
    public var served: Int { _served.load(ordering: .relaxed) }
    public var reportedLoad: Int? {
        let v = _reportedLoad.load(ordering: .relaxed)
        return v < 0 ? nil : v
    }
    func setReportedLoad(_ load: Int?) { _reportedLoad.store(load ?? -1, ordering: .relaxed) }

    func requestStarted() { _inFlight.add(1, ordering: .relaxed); _served.add(1, ordering: .relaxed) }
    func requestFinished() { _inFlight.subtract(1, ordering: .relaxed) }

    /// True when the worker may take new requests.
    public var isAvailable: Bool { isHealthy && !isDraining }
}
