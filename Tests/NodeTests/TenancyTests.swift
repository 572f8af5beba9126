import Testing
@testable import Node

/// The sticky-session key a caller's routing key stands for: one tenant's keys never meet
/// another's, nor an untenanted caller's, whatever bytes the header carries.
@Suite struct TenancyTests {
    @Test func routingKeysOfDifferentCallersNeverMeet() {
        let callers: [String?] = [nil, "acme", "globex", "a"]
        let raws = ["s", "acme\u{1F}s", "\u{1F}s", "\u{1F}acme\u{1F}s", "", "globex", "a\u{1F}\u{1F}s"]
        var seen: [String: (String?, String)] = [:]
        for caller in callers {
            for raw in raws {
                let key = Tenancy.routingKey(raw, tenant: caller)!
                if let earlier = seen[key] {
                    Issue.record("\(caller ?? "none")/\(raw.debugDescription) meets \(earlier.0 ?? "none")/\(earlier.1.debugDescription) as \(key.debugDescription)")
                }
                seen[key] = (caller, raw)
            }
        }
        #expect(Tenancy.routingKey("session-1", tenant: nil) == "session-1", "no tenant: the key as before")
        #expect(Tenancy.routingKey(nil, tenant: "acme") == nil, "no key: none made up")
    }
}
