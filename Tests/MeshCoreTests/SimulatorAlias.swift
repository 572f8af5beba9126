import MeshCore
import MeshSimulation

/// The tests call the shared deterministic network `Simulator`.
typealias Simulator = NetworkSimulator
