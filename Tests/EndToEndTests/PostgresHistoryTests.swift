import Foundation
import TestSupport
import Testing

/// `--history-backend postgres` with a real PostgreSQL server: what two routers share, and what
/// clients see while the database restarts.
@Suite(.serialized) struct PostgresHistoryTests {
    @Test func twoRoutersShareHistoryThroughPostgresAndADatabaseRestartLosesNothing() async throws {
        let db = try await PostgresServer()
        let w = try await InProcessWorker(name: "w")
        let flags = ["--worker-urls", w.url, "--history-backend", "postgres", "--postgres-db-url", db.url, "--postgres-op-timeout-secs", "2"]
        let a = try await InProcessRouter(flags)
        let b = try await InProcessRouter(flags)

        // A conversation made on A, continued by a turn on B, listed on A.
        let conversation = try a.request("POST", "/v1/conversations", body: #"{"metadata":{"topic":"routers"}}"#).json()["id"] as? String ?? ""
        #expect(conversation.hasPrefix("conv_"))
        let turn = try b.respond(#"{"input":"What is a router?","conversation":"\#(conversation)"}"#)
        #expect(turn.status == 200 && turn.header("x-smg-history-write") == nil)
        let items = try a.request("GET", "/v1/conversations/\(conversation)/items?order=asc").json()["data"] as? [[String: Any]] ?? []
        #expect(items.count == 2 && items.first?["role"] as? String == "user" && items.last?["role"] as? String == "assistant")

        // A chain across routers: the worker reads the first turn on the second.
        let first = try a.respond(#"{"input":"Keep this."}"#).json()["id"] as? String ?? ""
        let second = try b.respond(#"{"input":"Still there?","previous_response_id":"\#(first)"}"#)
        #expect(second.status == 200 && second.header("x-sim-prompt") == simPrompt("Keep this." + ResponsesTests.answer + "Still there?"))

        // The database goes down (immediate shutdown): history is a clear 503, answers still come.
        db.stop()
        let chained = try a.respond(#"{"input":"x","previous_response_id":"\#(first)"}"#)
        #expect(chained.status == 503 && chained.errorCode == "history_unavailable")
        #expect(try b.request("GET", "/v1/conversations/\(conversation)").status == 503)
        let during = try b.respond(#"{"input":"during"}"#)
        #expect(during.status == 200 && during.header("x-smg-history-write") == "deferred")
        let duringID = try during.json()["id"] as? String ?? ""

        // Back: no router restart; the deferred turn is written; nothing committed was lost.
        try await db.start()
        try await eventually(timeout: .seconds(35), "the deferred turn was written once the database was back") {
            try a.request("GET", "/v1/responses/\(duringID)").status == 200
        }
        let listed = try a.request("GET", "/v1/conversations/\(conversation)/items").json()["data"] as? [[String: Any]] ?? []
        #expect(listed.count == 2, "the conversation's items survived the restart")
        let third = try a.respond(#"{"input":"And now?","previous_response_id":"\#(second.json()["id"] as? String ?? "")"}"#)
        #expect(third.status == 200 && third.header("x-sim-prompt") == simPrompt("Keep this." + ResponsesTests.answer + "Still there?" + ResponsesTests.answer + "And now?"))
    }

    @Test func aWrongPasswordIsAClear503NotACrash() async throws {
        let db = try await PostgresServer()
        let w = try await InProcessWorker(name: "w")
        let wrong = db.url.replacingOccurrences(of: ":\(PostgresServer.password)@", with: ":nope@")
        let smg = try await InProcessRouter(["--worker-urls", w.url, "--history-backend", "postgres", "--postgres-db-url", wrong, "--postgres-op-timeout-secs", "2"])
        let r = try smg.request("POST", "/v1/conversations", body: "{}")
        #expect(r.status == 503 && r.errorCode == "history_unavailable")
        #expect(!String(decoding: r.body, as: UTF8.self).contains("nope"), "the password is not echoed")
        #expect(try smg.chat("hi").status == 200, "inference does not need history")
    }
}
