import Foundation
import Testing

/// The folders under `Sources/Node` form layers: by type references, no folder uses a type of a
/// folder that uses one of its own, directly or around a loop. A newcomer can then read the
/// router bottom-up (Kernel and JSON first, Server last), and a change to a lower folder cannot
/// need one in an upper folder to compile. docs/architecture.md lists the layers this finds.
@Suite struct FolderLayersTests {
    /// Top-level declarations: the names a folder offers the others.
    private static var declaration: Regex<(Substring, Substring)> { #/(?m)^(?:(?:public|internal|private|fileprivate|final|indirect)\s+)*(?:class|struct|enum|protocol|actor|typealias)\s+([A-Za-z_][A-Za-z0-9_]*)/# }

    /// Every folder and the folders whose types it names (comments left out).
    static func folderGraph() throws -> [String: Set<String>] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let node = root.appendingPathComponent("Sources/Node")
        var files: [(folder: String, text: String)] = []
        for folder in try FileManager.default.contentsOfDirectory(atPath: node.path) {
            let dir = node.appendingPathComponent(folder)
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { continue }
            for name in names where name.hasSuffix(".swift") {
                files.append((folder, try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)))
            }
        }
        var owner: [String: String] = [:]
        let declaration = Self.declaration
        for file in files {
            for match in file.text.matches(of: declaration) where owner[String(match.1)] == nil { owner[String(match.1)] = file.folder }
        }
        var edges: [String: Set<String>] = [:]
        for file in files {
            edges[file.folder, default: []].formUnion([])
            let code = file.text.split(separator: "\n").map { line in line.range(of: "//").map { line[..<$0.lowerBound] } ?? line }.joined(separator: "\n")
            for word in code.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }) {
                if let other = owner[String(word)], other != file.folder { edges[file.folder, default: []].insert(other) }
            }
        }
        return edges
    }

    /// The folders in layers, bottom first; nil when some folders reach each other in a loop
    /// (then `loop` names the folders on one).
    static func layers(_ edges: [String: Set<String>]) -> (layers: [[String]]?, loop: Set<String>) {
        var level: [String: Int] = [:]
        var remaining = Set(edges.keys)
        while !remaining.isEmpty {
            let ready = remaining.filter { edges[$0, default: []].allSatisfy { level[$0] != nil } }
            guard !ready.isEmpty else { return (nil, remaining.filter { reaches(edges, from: $0, to: $0) }) }
            for folder in ready { level[folder] = (edges[folder, default: []].map { level[$0]! }.max() ?? -1) + 1 }
            remaining.subtract(ready)
        }
        let depth = level.values.max() ?? -1
        return ((0...max(depth, 0)).map { l in level.filter { $0.value == l }.keys.sorted() }, [])
    }

    private static func reaches(_ edges: [String: Set<String>], from start: String, to goal: String) -> Bool {
        var seen: Set<String> = []
        var next = Array(edges[start, default: []])
        while let folder = next.popLast() {
            if folder == goal { return true }
            if seen.insert(folder).inserted { next.append(contentsOf: edges[folder, default: []]) }
        }
        return false
    }

    @Test func theRoutersFoldersFormLayers() throws {
        let edges = try Self.folderGraph()
        #expect(edges.count >= 15, "Sources/Node not found or nearly empty: \(edges.keys.sorted())")
        let result = Self.layers(edges)
        let loop = result.loop.sorted().map { "\($0) → \(edges[$0, default: []].intersection(result.loop).sorted())" }
        #expect(result.layers != nil, "folders that reach each other in a loop (each with the folders of the loop it names): \(loop)")
        // The two ends stay where the map in docs/architecture.md puts them.
        if let layers = result.layers {
            #expect(layers.first?.contains("JSON") == true)
            #expect(layers.last == ["Server"])
        }
    }

    @Test func aLoopIsFound() {
        let edges: [String: Set<String>] = ["A": ["B"], "B": ["C"], "C": ["A"], "D": ["A"], "E": []]
        let result = Self.layers(edges)
        #expect(result.layers == nil)
        #expect(result.loop == ["A", "B", "C"])  // D is above the loop, not on it
        #expect(Self.layers(["A": ["B"], "B": [], "C": ["A", "B"]]).layers == [["B"], ["A"], ["C"]])
    }
}
