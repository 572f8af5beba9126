import MeshCore

/// The tests call the shared deterministic network `Simulator`.
typealias Simulator = NetworkSimulator
