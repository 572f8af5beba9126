import Foundation
import Mesh
import NIOCore

/// What a running router gives a successor (`offer`) and does once the successor serves
/// (`handOver`): the two closures of its `HandoverListener`.
struct RouterHandover: Sendable {
    let state: RouterState
    let api: (channel: any Channel, fd: Int32)
    let metrics: (channel: any Channel, fd: Int32)
    let mesh: MeshService?

    /// The listening sockets (the mesh's as they are now: its UDP socket is reopened after
    /// network errors), the mesh name, and every worker with its settings and health.
    var offer: HandoverListener.Offer {
        { [state, api, metrics, mesh] in
            var sockets: [HandoverOffer.Socket] = [.api, .metrics]
            var descriptors = [api.fd, metrics.fd]
            if let d = mesh?.descriptors {
                sockets += [.meshDatagram, .meshListener]
                descriptors += [d.datagram, d.listener]
            }
            let workers = state.registry.all.map {
                HandoverOffer.WorkerState(url: $0.url.canonical, settings: WorkerFields.settings(of: $0), health: $0.healthStatus)
            }
            return (HandoverOffer(pid: getpid(), sockets: sockets, meshName: mesh?.config.name, workers: workers), descriptors)
        }
    }

    /// The successor serves: stop accepting (this process's copies of the listening sockets
    /// close; the successor's keep them open, so no connection is refused), and give the mesh
    /// port up without a leave when the successor took it under this name. The drain follows.
    var handOver: HandoverListener.HandOver {
        { [state, api, metrics, mesh] accepted in
            // Listeners first: a readiness probe this router accepted after draining began would
            // read 503 although the successor is ready.
            try? await api.channel.close()
            try? await metrics.channel.close()
            state.markHandedOver()
            state.startDraining()
            guard let mesh else { return }
            if accepted.took.contains(.meshDatagram), accepted.meshName == mesh.config.name {
                await mesh.handOver()
            } else {
                await mesh.leave()
            }
        }
    }
}
