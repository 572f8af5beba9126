import Foundation
import JWTKit

/// The issuer's signing keys, fetched when first needed and again when a token names a key id
/// that is not in the set (the issuer rotated its keys), at most once per `refetchInterval` so a
/// flood of tokens with made-up key ids cannot turn the router into a JWKS hammer.
actor JWKSCache {
    enum Source: Sendable {
        case jwks(ResourceURL)
        /// The OIDC discovery document, whose `jwks_uri` names the key set.
        case discovery(ResourceURL)
    }

    private let source: Source
    private let refetchInterval: Duration
    private let fetch: JWTAuthority.Fetch
    private let allowPlainHTTP: Bool
    /// Told why a load failed (at most once per `refetchInterval`): for the log, never for callers.
    private let onFailure: @Sendable (String) -> Void
    private var collection: JWTKeyCollection?
    private var kids: Set<String> = []
    private var lastFetch: ContinuousClock.Instant?
    private var running: Task<Void, any Error>?

    init(source: Source, refetchInterval: Duration, allowPlainHTTP: Bool = false, fetch: @escaping JWTAuthority.Fetch,
         onFailure: @escaping @Sendable (String) -> Void = { _ in }) {
        self.source = source
        self.refetchInterval = refetchInterval
        self.allowPlainHTTP = allowPlainHTTP
        self.fetch = fetch
        self.onFailure = onFailure
    }

    /// The keys, when they include `kid` (or, for a token without one, when the set holds
    /// exactly one key); nil when they do not. Throws only when no keys could be loaded at all.
    func collection(needing kid: String?) async throws -> JWTKeyCollection? {
        // A load in progress (the one at start-up, or another request's) is awaited, not skipped.
        if let running { _ = try? await running.value }
        if collection == nil || !has(kid), lastFetch.map({ ContinuousClock.now - $0 >= refetchInterval }) ?? true {
            do { try await refresh() } catch where collection != nil { /* keep serving the keys we have */ }
        }
        guard let collection else { throw JWKSError("no signing keys loaded") }
        return has(kid) ? collection : nil
    }

    private func has(_ kid: String?) -> Bool {
        guard let kid else { return kids.count == 1 }
        return kids.contains(kid)
    }

    private func refresh() async throws {
        if let running { return try await running.value }
        let task = Task { try await self.load() }
        running = task
        defer { running = nil }
        do { try await task.value } catch {
            onFailure("\(error)")
            throw error
        }
    }

    private func load() async throws {
        lastFetch = .now
        let jwksURL: ResourceURL
        switch source {
        case .jwks(let url): jwksURL = url
        case .discovery(let url):
            guard let document = JSONValue.parse(try await fetch(url)), let uri = document["jwks_uri"]?.string else {
                throw JWKSError("\(url.description) has no jwks_uri")
            }
            jwksURL = try ResourceURL(parsing: uri)
            guard jwksURL.isSafeForKeys(allowPlainHTTP: allowPlainHTTP) else {
                throw JWKSError("\(url.description) names jwks_uri \(jwksURL.description), plain HTTP to another host (refused without --jwt-allow-http)")
            }
        }
        let body = try await fetch(jwksURL)
        let jwks = try JSONDecoder().decode(JWKS.self, from: Data(body))
        let fresh = JWTKeyCollection()
        var ids: Set<String> = []
        for jwk in jwks.keys {
            // A key without an id, or of a kind jwt-kit cannot use, is skipped, not fatal.
            guard let kid = jwk.keyIdentifier?.string, (try? await fresh.add(jwk: jwk)) != nil else { continue }
            ids.insert(kid)
        }
        guard !ids.isEmpty else { throw JWKSError("\(jwksURL.description) holds no usable key") }
        collection = fresh
        kids = ids
    }
}

struct JWKSError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
