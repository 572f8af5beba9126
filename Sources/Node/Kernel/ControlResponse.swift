import NIOHTTP1

/// An answer the router writes itself (a control route, never a worker's response).
struct ControlResponse {
    var status: HTTPResponseStatus = .ok
    var body: String
    var contentType: String? = "application/json"
    var headers = HTTPHeaders()
}

extension ControlResponse {
    init(status: HTTPResponseStatus = .ok, json: JSONValue) {
        self.init(status: status, body: json.render())
    }
}
