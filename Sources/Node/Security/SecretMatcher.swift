import Crypto

/// Compares a presented secret with configured ones without leaking, through timing, how much
/// of it matched or how long the real one is: both sides are hashed to fixed-size SHA-256
/// digests, swift-crypto compares digests in constant time, and every candidate is compared
/// (no early exit on a match).
struct SecretMatcher<Value: Sendable>: Sendable {
    private let entries: [(digest: SHA256Digest, value: Value)]

    init(_ secrets: [(secret: String, value: Value)]) {
        entries = secrets.map { (SHA256.hash(data: Array($0.secret.utf8)), $0.value) }
    }

    var isEmpty: Bool { entries.isEmpty }

    func match(_ presented: Substring) -> Value? {
        let digest = SHA256.hash(data: Array(presented.utf8))
        var found: Value?
        for entry in entries where entry.digest == digest { found = entry.value }
        return found
    }
}
