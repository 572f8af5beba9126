import Foundation
@testable import Node
import Testing

/// Every code the router answers with has one status and one type, and docs/errors.md lists
/// exactly those codes with them.
@Suite struct APIErrorTests {
    static let page: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("docs/errors.md"), encoding: .utf8)) ?? ""
    }()

    @Test func theErrorsPageListsEveryCodeWithItsStatusAndType() {
        #expect(!Self.page.isEmpty, "docs/errors.md is readable")
        for code in APIError.Code.allCases {
            let error = APIError(code, "m")
            let row = "| `\(code.rawValue)` | \(error.status.code) | `\(error.type)` |"
            #expect(Self.page.contains(row), "docs/errors.md lacks \(row)")
        }
        let listed = Self.page.split(separator: "\n").filter { $0.hasPrefix("| `") }.count
        #expect(listed == APIError.Code.allCases.count, "docs/errors.md lists \(listed) codes; the router has \(APIError.Code.allCases.count)")
    }

    @Test func theBodyIsJSONWithTheCodeTypeAndMessage() throws {
        for code in APIError.Code.allCases {
            let error = APIError(code, #"a "quoted" message"#)
            let object = try JSONSerialization.jsonObject(with: Data(error.body.utf8)) as? [String: Any]
            let body = object?["error"] as? [String: Any]
            #expect(body?["code"] as? String == code.rawValue && body?["type"] as? String == error.type
                    && body?["message"] as? String == #"a "quoted" message"#, "\(error.body)")
        }
    }
}
