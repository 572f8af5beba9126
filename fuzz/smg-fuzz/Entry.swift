import Foundation

#if FUZZING
/// libFuzzer's entry point; the target comes from `SMG_FUZZ_TARGET` (`fuzz/run.sh` sets it).
let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["SMG_FUZZ_TARGET"] ?? ""
    guard let t = FuzzTarget(rawValue: name) else {
        fatalError("SMG_FUZZ_TARGET must be one of \(FuzzTarget.allCases.map(\.rawValue))")
    }
    return t
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#elseif DEBUG
/// Without libFuzzer: replays inputs through a target, `smg-fuzz TARGET FILE|DIR …` (the
/// committed seed corpus, or a crash file a fuzzing run wrote), so a finding can be re-run and
/// debugged in a normal build.
@main
struct Replay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        if args.first == "write-wire-seeds", let dir = args.dropFirst().first {
            for (i, bytes) in FuzzTarget.wireSeeds().enumerated() {
                _ = FileManager.default.createFile(atPath: "\(dir)/seed-\(i)", contents: Data(bytes))
            }
            return
        }
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: smg-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE|DIR ...")
            exit(2)
        }
        var count = 0
        for path in args.dropFirst() {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { continue }
            let files = isDir.boolValue ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                data.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        print("smg-fuzz \(name): \(count) inputs ran without a finding")
    }
}
#else
/// A plain release build: the targets need `@testable` access, which it does not have.
@main
struct Unavailable {
    static func main() {
        print("smg-fuzz: build it with ./dev fuzz (fuzzing) or in debug (replay)")
        exit(2)
    }
}
#endif
