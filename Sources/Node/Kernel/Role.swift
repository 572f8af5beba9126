/// A control-plane role. `admin` may change the fleet; `user` may only read it.
public enum Role: String, Sendable, Comparable, CaseIterable {
    case user, admin
    public static func < (a: Role, b: Role) -> Bool { a == .user && b == .admin }
}
