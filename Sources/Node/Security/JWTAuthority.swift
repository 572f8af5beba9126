import Foundation
import JWTKit

/// Verifies control-plane JWTs from one OIDC issuer. jwt-kit checks the signature (RS256/384/512,
/// PS256/384/512, ES256/384/512, EdDSA); this type decides which keys are trusted and what the
/// claims must say: issuer, audience, expiry and not-before (with `leeway`), and a role.
///
/// Keys come from the issuer's JWKS (`--jwt-jwks-uri`, or the `jwks_uri` of
/// `<issuer>/.well-known/openid-configuration`), fetched on first use and again when a token
/// names a key id the cached set lacks (key rotation), at most once per `refetchInterval`.
final class JWTAuthority: Sendable {
    typealias Fetch = @Sendable (ResourceURL) async throws -> [UInt8]

    let settings: SecuritySettings.JWT
    private let keys: JWKSCache
    static let leeway: TimeInterval = 30
    static let acceptedAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    init(_ settings: SecuritySettings.JWT, refetchInterval: Duration = .seconds(10), fetch: @escaping Fetch,
         onKeysFailure: @escaping @Sendable (String) -> Void = { _ in }) throws(ConfigError) {
        self.settings = settings
        let source: JWKSCache.Source
        if let uri = settings.jwksURI {
            source = .jwks(try ResourceURL(parsing: uri))
        } else {
            source = .discovery(try ResourceURL(parsing: settings.issuer).appending(path: "/.well-known/openid-configuration"))
        }
        keys = JWKSCache(source: source, refetchInterval: refetchInterval, allowPlainHTTP: settings.allowPlainHTTP, fetch: fetch, onFailure: onKeysFailure)
    }

    /// Three dot-separated base64url parts: worth a signature check.
    static func looksLikeJWT(_ token: Substring) -> Bool {
        token.utf8.count < 16 << 10 && token.utf8.reduce(0) { $0 + ($1 == UInt8(ascii: ".") ? 1 : 0) } == 2
    }

    /// Loads the keys ahead of the first request (failures are retried on use).
    func prefetch() async throws { _ = try await keys.collection(needing: nil) }

    func authenticate(_ token: String, now: Date = Date()) async -> Result<Principal, APIError> {
        guard let header = Self.header(token) else { return .failure(.invalidToken("malformed token")) }
        guard let alg = header.alg, Self.acceptedAlgorithms.contains(alg) else {
            return .failure(.invalidToken("signing algorithm '\(header.alg ?? "none")' is not accepted"))
        }
        let collection: JWTKeyCollection
        do {
            guard let c = try await keys.collection(needing: header.kid) else {
                return .failure(.invalidToken("token was signed with a key the issuer does not publish (kid \(header.kid ?? "missing"))"))
            }
            collection = c
        } catch {
            // Why is logged where the load failed; a caller learns only that keys are missing.
            return .failure(.jwksUnavailable)
        }
        let claims: TokenClaims
        do {
            claims = try await collection.verify(token, as: TokenClaims.self)
        } catch {
            return .failure(.invalidToken("signature does not verify"))
        }
        return check(claims.values, now: now)
    }

    /// The claim checks, once the signature holds.
    func check(_ claims: [String: JSONValue], now: Date) -> Result<Principal, APIError> {
        guard claims["iss"]?.string == settings.issuer else { return .failure(.invalidToken("issuer is not \(settings.issuer)")) }
        let audiences = claims["aud"].map { $0.string.map { [$0] } ?? ($0.array ?? []).compactMap(\.string) } ?? []
        guard audiences.contains(settings.audience) else { return .failure(.invalidToken("token is not intended for audience \(settings.audience)")) }
        guard let exp = claims["exp"].flatMap(Self.seconds) else { return .failure(.invalidToken("token has no expiry (exp)")) }
        guard now.timeIntervalSince1970 < exp + Self.leeway else { return .failure(.invalidToken("token expired")) }
        if let nbf = claims["nbf"].flatMap(Self.seconds), now.timeIntervalSince1970 + Self.leeway < nbf {
            return .failure(.invalidToken("token is not valid yet (nbf)"))
        }
        let subject = claims["sub"]?.string ?? "unknown"
        let name = claims["preferred_username"]?.string ?? claims["name"]?.string ?? subject
        guard let role = role(in: claims) else {
            return .failure(APIError.forbidden(Principal(id: subject, name: name, role: .user, method: .jwt), needs: .user,
                                               detail: "token carries no gateway role in claim '\(settings.roleClaim)'"))
        }
        return .success(Principal(id: subject, name: name, role: role, method: .jwt))
    }

    /// The highest gateway role among the token's roles (through the mapping when one is given).
    func role(in claims: [String: JSONValue]) -> Role? {
        var value: JSONValue? = .object(claims)
        for part in settings.roleClaim.split(separator: ".") { value = value?[String(part)] }
        let names = value.map { $0.string.map { [$0] } ?? ($0.array ?? []).compactMap(\.string) } ?? []
        let roles = names.compactMap { settings.roleMapping.isEmpty ? Role(rawValue: $0) : settings.roleMapping[$0] }
        return roles.max()
    }

    private static func seconds(_ v: JSONValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    struct Header: Decodable { let alg: String?; let kid: String? }

    /// The token's header, read to pick the key (not trusted for anything else).
    static func header(_ token: String) -> Header? {
        guard let first = token.split(separator: ".", omittingEmptySubsequences: false).first,
              let data = Data(base64URL: first) else { return nil }
        return try? JSONDecoder().decode(Header.self, from: data)
    }
}

/// Every claim of a token, as JSON values: the role claim's name is configured, so claims are
/// read by name after verification instead of through fixed fields.
struct TokenClaims: JWTPayload {
    let values: [String: JSONValue]
    init(from decoder: any Decoder) throws { values = try [String: JSONValue](from: decoder) }
    func encode(to encoder: any Encoder) throws { throw EncodingError.invalidValue(self, .init(codingPath: [], debugDescription: "claims are only read")) }
    /// Claim checks need the configuration; `JWTAuthority.check` does them.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

extension Data {
    /// Base64url without padding, as JWTs use it.
    init?(base64URL s: Substring) {
        var b64 = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        self.init(base64Encoded: b64)
    }
}
