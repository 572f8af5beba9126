import ServiceLifecycle
import Tracing

/// Where a router's spans go, made when the router starts (`RouterNode.start(tracing:)`): the
/// binary passes swift-otel's OTLP exporter (`TraceExport`), tests an in-memory tracer. `make`
/// is told how to count an export that failed (`smg_trace_export_failures_total`); its service,
/// if any, runs in the router's service group and stops last, after the drain.
public struct TracingBackend: Sendable {
    public typealias Make = @Sendable (_ exportFailed: @escaping @Sendable () -> Void) throws -> (tracer: any Tracer, service: (any Service)?)
    let make: Make

    public init(_ make: @escaping Make) { self.make = make }

    func callAsFunction(_ exportFailed: @escaping @Sendable () -> Void) throws -> (tracer: any Tracer, service: (any Service)?) {
        try make(exportFailed)
    }
}
