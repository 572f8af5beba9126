@testable import Mesh
import Testing

@Suite struct SealingTests {
    let key1 = MeshKeyring.generate()
    let key2 = MeshKeyring.generate()

    @Test func sealedPacketsOpenUnderTheSameKeyOnly() throws {
        let a = Sealer(keyring: try MeshKeyring(parsing: key1))
        let b = Sealer(keyring: try MeshKeyring(parsing: key2))
        let message = Array("membership gossip".utf8)
        let packet = a.seal(message)
        #expect(try a.open(packet).get() == message)
        #expect(b.open(packet) == .failure(.unknownKey))
        #expect(a.seal(message) != packet, "a fresh nonce every time")
    }

    @Test func alteredGarbageAndOversizedInputIsRefused() throws {
        let s = Sealer(keyring: try MeshKeyring(parsing: key1), maxPacket: 1000)
        let packet = s.seal(Array("hello".utf8))
        for i in [0, 3, 10, Sealer.headerSize + 1, packet.count - 1] {
            var altered = packet
            altered[i] ^= 0x40
            let result = s.open(altered)
            #expect((try? result.get()) == nil, "byte \(i) altered yet opened")
        }
        #expect(s.open([]) == .failure(.tooShort))
        #expect(s.open(Array(repeating: 7, count: 60)) != .success(Array(repeating: 7, count: 15)))
        #expect(s.open(Array(repeating: 1, count: 5000)) == .failure(.oversized))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<1000 {
            let junk = (0..<Int.random(in: 0..<200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect((try? s.open(junk).get()) == nil)
        }
    }

    @Test func aRotatedKeyringOpensBothKeysAndSealsWithThePrimary() throws {
        let old = Sealer(keyring: try MeshKeyring(parsing: key1))
        let rotating = Sealer(keyring: try MeshKeyring(parsing: key2 + "\n" + key1 + "\n"))
        #expect(try rotating.open(old.seal([1, 2, 3])).get() == [1, 2, 3], "the old key still opens")
        #expect(old.open(rotating.seal([4])) == .failure(.unknownKey), "new packets use the new key")
        #expect(rotating.keyring?.keys.count == 2)
    }

    @Test func badKeyFilesAreClearErrors() {
        #expect(throws: MeshKeyring.ParseError.empty) { try MeshKeyring(parsing: "\n# comment\n") }
        #expect(throws: MeshKeyring.ParseError.badLine(1)) { try MeshKeyring(parsing: "abc") }
        #expect(throws: MeshKeyring.ParseError.badLine(2)) { try MeshKeyring(parsing: key1 + "\n" + String(repeating: "z", count: 64)) }
        #expect(MeshKeyring.generate().count == 64)
    }

    @Test func replayedPacketsAreRefused() {
        var f = ReplayFilter()
        let steps: [(String, UInt64, UInt64, Bool, String)] = [
            ("a", 1, 10, true, "first"),
            ("a", 1, 10, false, "the same packet twice"),
            ("a", 1, 12, true, "newer"),
            ("a", 1, 11, true, "late but new, inside the window"),
            ("a", 1, 11, false, "late and seen"),
            ("a", 1, 200, true, "a jump ahead"),
            ("a", 1, 100, false, "too old for the window"),
            ("a", 2, 0, true, "a restarted sender starts over"),
            ("a", 1, 300, false, "its previous life is over"),
            ("b", 1, 10, true, "senders are independent"),
        ]
        for (sender, generation, counter, expected, why) in steps {
            let accepted = f.accept(sender: sender, generation: generation, counter: counter)
            #expect(accepted == expected, "\(why)")
        }
    }

    @Test func keylessPacketsAndSealedOnesDoNotMix() throws {
        let keyless = Sealer(keyring: nil)
        let sealed = Sealer(keyring: try MeshKeyring(parsing: MeshKeyring.generate()))
        #expect(try keyless.open(keyless.seal([1, 2, 3])).get() == [1, 2, 3])
        #expect(keyless.seal([9]) == [Sealer.unsealedVersion, 9], "unsealed: a marker byte and the plaintext")
        #expect(sealed.open(keyless.seal([1])) == .failure(.unsealed))
        #expect(keyless.open(sealed.seal([1])) == .failure(.unknownKey))
        #expect(!keyless.isSealed && sealed.isSealed)
    }
}
