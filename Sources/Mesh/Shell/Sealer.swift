import CSodium

/// Seals and opens mesh packets with XChaCha20-Poly1305 (libsodium) under the cluster key.
///
/// Packet: `version (1) | key id (4) | nonce (24) | ciphertext + tag (16)`; the first five
/// bytes are authenticated as associated data. Without a key (keyless mode, warned about at
/// start) a packet is `0 | plaintext`: a sealed node refuses those (`unsealed`), a keyless node
/// refuses sealed ones (it cannot open them). A random 24-byte nonce per packet is safe with
/// XChaCha20. Anything that does not open — garbage, a forged or altered packet, another
/// cluster's key, an oversized datagram — is refused with a reason, for counting.
public struct Sealer: Sendable {
    public static let version: UInt8 = 1
    /// The first byte of a packet from a keyless node.
    public static let unsealedVersion: UInt8 = 0
    public static let headerSize = 1 + 4 + 24
    public static let tagSize = 16
    /// Plaintext limit for a datagram; TCP frames may be larger (`maxFrame`).
    public let maxPacket: Int

    public enum Refusal: String, Error, Sendable, CaseIterable {
        case tooShort = "too_short"
        case oversized
        case badVersion = "bad_version"
        case unknownKey = "unknown_key"
        case forged
        /// An unsealed packet at a node that has a key.
        case unsealed
    }

    /// nil: keyless (unsealed) mode.
    public let keyring: MeshKeyring?
    public var isSealed: Bool { keyring != nil }

    public init(keyring: MeshKeyring?, maxPacket: Int = 64 * 1024) {
        self.keyring = keyring
        self.maxPacket = maxPacket
    }

    public func seal(_ plaintext: [UInt8]) -> [UInt8] {
        guard let keyring else { return [Self.unsealedVersion] + plaintext }
        let key = keyring.primary
        var packet = [UInt8](repeating: 0, count: Self.headerSize + plaintext.count + Self.tagSize)
        packet[0] = Self.version
        packet[1] = UInt8(key.id >> 24); packet[2] = UInt8(key.id >> 16 & 0xFF); packet[3] = UInt8(key.id >> 8 & 0xFF); packet[4] = UInt8(key.id & 0xFF)
        packet.withUnsafeMutableBufferPointer { p in
            randombytes_buf(p.baseAddress! + 5, 24)
            var written: UInt64 = 0
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                p.baseAddress! + Self.headerSize, &written, plaintext, UInt64(plaintext.count),
                p.baseAddress!, 5, nil, p.baseAddress! + 5, key.bytes)
        }
        return packet
    }

    public func open(_ packet: [UInt8]) -> Result<[UInt8], Refusal> {
        if packet.first == Self.unsealedVersion {
            guard keyring == nil else { return .failure(.unsealed) }
            guard packet.count <= maxPacket + 1 else { return .failure(.oversized) }
            return .success(Array(packet.dropFirst()))
        }
        guard let keyring else { return .failure(packet.first == Self.version ? .unknownKey : .badVersion) }
        guard packet.count >= Self.headerSize + Self.tagSize else { return .failure(.tooShort) }
        guard packet.count <= maxPacket + Self.headerSize + Self.tagSize else { return .failure(.oversized) }
        guard packet[0] == Self.version else { return .failure(.badVersion) }
        let id = UInt32(packet[1]) << 24 | UInt32(packet[2]) << 16 | UInt32(packet[3]) << 8 | UInt32(packet[4])
        guard let key = keyring.key(id: id) else { return .failure(.unknownKey) }
        let cipherLength = packet.count - Self.headerSize
        var plain = [UInt8](repeating: 0, count: cipherLength - Self.tagSize)
        var plainLength: UInt64 = 0
        let status = packet.withUnsafeBufferPointer { p in
            crypto_aead_xchacha20poly1305_ietf_decrypt(
                &plain, &plainLength, nil, p.baseAddress! + Self.headerSize, UInt64(cipherLength),
                p.baseAddress!, 5, p.baseAddress! + 5, key.bytes)
        }
        guard status == 0 else { return .failure(.forged) }
        return .success(plain)
    }
}

/// Refuses replayed packets: each sender numbers its packets (per process generation); a
/// receiver remembers the highest number and a 64-packet window below it per sender.
public struct ReplayFilter: Sendable {
    private var senders: [String: (generation: UInt64, highest: UInt64, window: UInt64)] = [:]
    public init() {}

    /// True the first time (sender, generation, counter) is seen and it is not too old.
    public mutating func accept(sender: String, generation: UInt64, counter: UInt64) -> Bool {
        guard let s = senders[sender], generation <= s.generation else {
            if let s = senders[sender], generation < s.generation { return false }
            senders[sender] = (generation, counter, 1)
            return true
        }
        if generation < s.generation { return false }
        if counter > s.highest {
            let shift = counter - s.highest
            let window = shift >= 64 ? 1 : (s.window << shift) | 1
            senders[sender] = (generation, counter, window)
            return true
        }
        let age = s.highest - counter
        guard age < 64 else { return false }
        let bit: UInt64 = 1 << age
        guard s.window & bit == 0 else { return false }
        senders[sender] = (generation, s.highest, s.window | bit)
        return true
    }
}
