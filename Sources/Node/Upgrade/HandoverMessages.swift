import Reliability

/// What a running router tells the process that takes over from it, with its listening sockets
/// (`UnixSocket.send(_:descriptors:)`): which descriptor is which, its mesh name, and its
/// workers with their settings and health, so the successor routes from its first request as
/// the predecessor did (no wait for a first health check, no worker added at run time lost).
///
/// JSON, checked as anything from another process is: bounded, every field typed, and the
/// descriptor count must match the sockets named.
struct HandoverOffer: Equatable {
    enum Socket: String, CaseIterable, Sendable {
        case api, metrics
        case meshDatagram = "mesh_udp"
        case meshListener = "mesh_tcp"
    }

    struct WorkerState: Equatable {
        let url: String
        let settings: JSONValue
        let health: HealthState.Status
    }

    static let version = 1
    static let maxWorkers = 10_000

    var pid: Int32
    /// In the order of the descriptors sent with the offer.
    var sockets: [Socket]
    var meshName: String?
    var workers: [WorkerState]

    func encoded() -> [UInt8] {
        var o: [String: JSONValue] = [
            "version": .int(Self.version), "pid": .int(Int(pid)),
            "sockets": .array(sockets.map { .string($0.rawValue) }),
            "workers": .array(workers.map { .object(["url": .string($0.url), "settings": $0.settings, "health": .string($0.health.rawValue)]) }),
        ]
        if let meshName { o["mesh_name"] = .string(meshName) }
        return Array(JSONValue.object(o).render().utf8)
    }

    static func decode(_ bytes: [UInt8], descriptors: Int) throws(HandoverError) -> HandoverOffer {
        guard let v = JSONValue.parse(bytes), v.object != nil else { throw .malformed("the offer is not a JSON object") }
        guard v["version"]?.int == version else { throw .malformed("the offer's version is not \(version) (a router of another release?)") }
        guard let pid = v["pid"]?.int, pid > 0, pid <= Int(Int32.max) else { throw .malformed("the offer has no pid") }
        guard let names = v["sockets"]?.array, names.count <= Socket.allCases.count else { throw .malformed("the offer's sockets are not a list") }
        var sockets: [Socket] = []
        for n in names {
            guard let s = n.string.flatMap(Socket.init(rawValue:)), !sockets.contains(s) else { throw .malformed("the offer names an unknown or repeated socket") }
            sockets.append(s)
        }
        guard sockets.count == descriptors else { throw .malformed("the offer names \(sockets.count) sockets but came with \(descriptors) descriptors") }
        let meshName = v["mesh_name"]?.string
        if v["mesh_name"] != nil, meshName == nil { throw .malformed("the offer's mesh_name is not a string") }
        guard let list = v["workers"]?.array, list.count <= maxWorkers else { throw .malformed("the offer's workers are not a list of at most \(maxWorkers)") }
        var workers: [WorkerState] = []
        for w in list {
            guard let url = w["url"]?.string, let settings = w["settings"], settings.object != nil,
                  let health = w["health"]?.string.flatMap(HealthState.Status.init(rawValue:)) else { throw .malformed("a worker in the offer lacks url, settings or health") }
            workers.append(WorkerState(url: url, settings: settings, health: health))
        }
        return HandoverOffer(pid: Int32(pid), sockets: sockets, meshName: meshName, workers: workers)
    }
}

/// The successor's answer once it serves on the sockets it took: the predecessor then stops
/// accepting, drains, and exits. `took` lists the sockets it uses (a socket it does not use,
/// such as the mesh's when the successor runs without a mesh, stays the predecessor's to close
/// as it would on shutdown).
struct HandoverAcceptance: Equatable {
    var pid: Int32
    var took: [HandoverOffer.Socket]
    /// The successor's mesh name: the predecessor hands its membership over only to the same
    /// name (a renamed successor is a new member: the predecessor leaves as on shutdown).
    var meshName: String?

    func encoded() -> [UInt8] {
        var o: [String: JSONValue] = ["ready": .bool(true), "pid": .int(Int(pid)), "took": .array(took.map { .string($0.rawValue) })]
        if let meshName { o["mesh_name"] = .string(meshName) }
        return Array(JSONValue.object(o).render().utf8)
    }

    static func decode(_ bytes: [UInt8]) throws(HandoverError) -> HandoverAcceptance {
        guard let v = JSONValue.parse(bytes), v["ready"] == .bool(true), let pid = v["pid"]?.int, pid > 0, pid <= Int(Int32.max),
              let took = v["took"]?.array, took.count <= HandoverOffer.Socket.allCases.count else { throw .malformed("the successor's answer is not a readiness") }
        var sockets: [HandoverOffer.Socket] = []
        for t in took {
            guard let s = t.string.flatMap(HandoverOffer.Socket.init(rawValue:)) else { throw .malformed("the successor's answer names an unknown socket") }
            sockets.append(s)
        }
        return HandoverAcceptance(pid: Int32(pid), took: sockets, meshName: v["mesh_name"]?.string)
    }
}

enum HandoverError: Error, CustomStringConvertible {
    case malformed(String)
    case socket(UnixSocket.Failure)
    case mismatch(String)
    case refused(String)

    var description: String {
        let why: String
        switch self {
        case .malformed(let w): why = w
        case .socket(let failure): why = "\(failure)"
        case .mismatch(let w): why = w
        case .refused(let w): why = w
        }
        return "in-place upgrade (--takeover-socket): \(why)"
    }
}
