import Mesh
#if canImport(Glibc)
import Glibc
#endif

/// The successor's half of an in-place upgrade (`--takeover-socket`): before binding anything
/// it asks the router serving behind the path for its offer (`HandoverOffer`): the listening
/// sockets, the mesh name, the workers. It serves on those sockets, then `complete` tells the
/// predecessor, which stops accepting, drains its requests and exits. Until `complete`, the
/// predecessor serves as before: a successor that fails to start costs nothing.
///
/// Between the two, both processes accept on the same sockets (the kernel hands each new
/// connection to one of them): no connection is refused at any moment.
final class Takeover {
    let offer: HandoverOffer
    private var descriptors: [HandoverOffer.Socket: Int32]
    private let connection: UnixSocket

    private init(offer: HandoverOffer, descriptors: [HandoverOffer.Socket: Int32], connection: UnixSocket) {
        self.offer = offer
        self.descriptors = descriptors
        self.connection = connection
    }

    deinit { abandon() }

    /// The offer of the router serving behind `path`, or nil when none does (no file there, or
    /// a file no process listens on: the first start).
    static func begin(path: String, timeout: Duration = .seconds(10)) throws -> Takeover? {
        let connection: UnixSocket
        do {
            connection = try UnixSocket.connect(to: path, timeout: timeout)
        } catch let failure {
            if failure.isConnectionRefusedOrMissing { return nil }
            throw HandoverError.socket(failure)
        }
        let message: (bytes: [UInt8], descriptors: [Int32])
        do { message = try connection.receive() } catch let failure {
            if failure.isClosed { throw HandoverError.refused("the router behind \(path) refused the takeover (is it run by another user?)") }
            throw HandoverError.socket(failure)
        }
        let offer: HandoverOffer
        do { offer = try HandoverOffer.decode(message.bytes, descriptors: message.descriptors.count) } catch {
            for d in message.descriptors { close(d) }
            throw error
        }
        return Takeover(offer: offer, descriptors: Dictionary(uniqueKeysWithValues: zip(offer.sockets, message.descriptors)), connection: connection)
    }

    /// The predecessor's socket for `socket`, now this process's to serve on (and to close);
    /// nil when it had none. Refused when it is not of `kind`, or not bound to `port` (when
    /// `port` is not 0): a successor configured for another port cannot serve on this one.
    func take(_ socket: HandoverOffer.Socket, kind: BoundSocket.Kind, port: Int, flag: String) throws -> Int32? {
        guard let fd = descriptors[socket] else { return nil }
        guard let found = BoundSocket.describe(fd), found.kind == kind else {
            throw HandoverError.mismatch("the predecessor's \(socket.rawValue) socket is not a bound \(kind) socket")
        }
        guard port == 0 || found.port == port else {
            throw HandoverError.mismatch("the running router's \(socket.rawValue) socket is on port \(found.port), this one is configured with \(flag) \(port); an in-place upgrade keeps the ports (stop and start to change them)")
        }
        descriptors[socket] = nil
        return fd
    }

    /// This router serves: tell the predecessor, which stops accepting and drains. `took`: the
    /// sockets this router serves on (any other it was offered is closed here).
    func complete(took: [HandoverOffer.Socket], meshName: String?) throws {
        do { try connection.send(HandoverAcceptance(pid: getpid(), took: took, meshName: meshName).encoded()) } catch { throw HandoverError.socket(error) }
        abandon()
    }

    /// Closes what was not taken and the connection: the predecessor keeps serving.
    func abandon() {
        for fd in descriptors.values { close(fd) }
        descriptors = [:]
        connection.close()
    }
}

extension UnixSocket.Failure {
    var isClosed: Bool { if case .closed = self { return true }; return false }
}
