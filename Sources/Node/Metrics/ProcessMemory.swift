import CMalloc
import Foundation

/// The process's memory as the reference gateway's allocator families report it, from what
/// glibc and Linux say: `allocated` is what malloc has handed out and not had back (its
/// arenas' in-use bytes plus its mmapped blocks, `mallinfo2`), `resident` the pages in RAM
/// (`/proc/self/statm`). Read at scrape time only: `mallinfo2` walks every arena under its lock.
enum ProcessMemory {
    static func sample() -> (allocated: Int, resident: Int?) {
        let info = mallinfo2()
        let allocated = Int(info.uordblks) + Int(info.hblkhd)
        // statm: size resident shared text lib data dt, in pages.
        let fields = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ")
        let pages = fields.flatMap { $0.count > 1 ? Int($0[1]) : nil }
        return (allocated, pages.map { $0 * Int(sysconf(Int32(_SC_PAGESIZE))) })
    }
}
