/// A state-based CRDT: `merge` is commutative, associative and idempotent, so replicas that
/// have seen the same updates, in any order and any number of times, are equal. The mesh's
/// replicated stores are one (`ReplicaState`); CRDTLawTests checks the laws on random replicas.
public protocol CRDT: Sendable, Equatable {
    mutating func merge(_ other: Self)
}
