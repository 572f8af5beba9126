import CHiredis
import CSodium
import Testing

/// The C shims build and link: the mesh will seal with libsodium, history will speak Redis
/// through hiredis's reader.
@Suite struct SystemLibraryTests {
    @Test func libsodiumSealsAndOpens() {
        #expect(sodium_init() >= 0)
        var key = [UInt8](repeating: 0, count: Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES))
        crypto_aead_xchacha20poly1305_ietf_keygen(&key)
        var nonce = [UInt8](repeating: 0, count: Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES))
        randombytes_buf(&nonce, nonce.count)
        let message = Array("gossip".utf8)
        var sealed = [UInt8](repeating: 0, count: message.count + Int(crypto_aead_xchacha20poly1305_ietf_ABYTES))
        var sealedLength: UInt64 = 0
        crypto_aead_xchacha20poly1305_ietf_encrypt(&sealed, &sealedLength, message, UInt64(message.count), nil, 0, nil, nonce, key)
        var opened = [UInt8](repeating: 0, count: message.count)
        var openedLength: UInt64 = 0
        #expect(crypto_aead_xchacha20poly1305_ietf_decrypt(&opened, &openedLength, nil, sealed, sealedLength, nil, 0, nonce, key) == 0)
        #expect(opened == message)
        sealed[0] ^= 1
        #expect(crypto_aead_xchacha20poly1305_ietf_decrypt(&opened, &openedLength, nil, sealed, sealedLength, nil, 0, nonce, key) != 0)
    }

    @Test func hiredisParsesReplies() {
        guard let reader = redisReaderCreate() else { Issue.record("redisReaderCreate failed"); return }
        defer { redisReaderFree(reader) }
        let wire = "*2\r\n$5\r\nhello\r\n:42\r\n"
        #expect(redisReaderFeed(reader, wire, wire.utf8.count) == REDIS_OK)
        var reply: UnsafeMutableRawPointer?
        #expect(redisReaderGetReply(reader, &reply) == REDIS_OK)
        guard let r = reply?.assumingMemoryBound(to: redisReply.self) else { Issue.record("no reply"); return }
        defer { freeReplyObject(reply) }
        #expect(r.pointee.type == REDIS_REPLY_ARRAY)
        #expect(r.pointee.elements == 2)
        #expect(r.pointee.element[1]!.pointee.integer == 42)
    }
}
