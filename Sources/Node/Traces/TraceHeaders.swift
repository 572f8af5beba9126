import Instrumentation
import NIOHTTP1

/// W3C trace context in and out of HTTP headers: `traceparent` and `tracestate` read from a
/// client's request, written on the requests the router sends workers.
struct HTTPHeadersExtractor: Extractor {
    func extract(key: String, from headers: HTTPHeaders) -> String? {
        // One value, bounded: a header repeated or absurdly long is not a trace context.
        let values = headers[key]
        guard values.count == 1, let value = values.first, value.utf8.count <= 512 else { return nil }
        return value
    }
}

struct HTTPHeadersInjector: Injector {
    func inject(_ value: String, forKey key: String, into headers: inout HTTPHeaders) {
        headers.replaceOrAdd(name: key, value: value)
    }
}
