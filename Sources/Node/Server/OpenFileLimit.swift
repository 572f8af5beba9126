#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit, which bounds client plus worker connections. Like Go's
/// runtime and nginx's `worker_rlimit_nofile`, the router raises the soft limit to the hard one
/// at start: Debian's default soft limit (1,024) would otherwise refuse connections long before
/// `--max-client-connections`.
enum OpenFileLimit {
    /// Raises the soft limit as far as allowed and returns it (nil when it cannot be read).
    static func raise() -> Int? {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// The client connections that fit: each may hold a worker connection too, and some files
    /// are for listeners, the mesh and logs.
    static func clientConnections(fitting files: Int) -> Int { max(16, (files - 256) / 2) }
}
