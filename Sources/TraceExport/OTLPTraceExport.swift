import Logging
import Node
import OTel
import ServiceLifecycle
import Tracing

/// `--enable-trace`: swift-otel's tracer with its batching span processor and OTLP/gRPC
/// exporter to `--otlp-traces-endpoint`. W3C trace context in and out; parent-based sampling at
/// `--otlp-traces-sample-ratio` for the traces the router starts (decided by the router itself). Spans wait in a bounded queue
/// (2,048; past it they are dropped) and go out in batches off the request path; a batch the
/// collector does not take is dropped and counted, never retried, so a collector that is down
/// costs the router nothing but the count. The `OTEL_*` variables of the OpenTelemetry
/// specification (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, ...) tune the exporter.
public enum OTLPTraceExport {
    public static func backend(_ settings: TracingSettings, instance: String, logger: Logger) -> TracingBackend {
        TracingBackend { exportFailed in
            var config = OTel.Configuration.default
            config.serviceName = "smg"
            config.resourceAttributes = ["service.instance.id": instance, "service.version": Launcher.version]
            config.diagnosticLogger = .custom(logger)
            config.diagnosticLogLevel = .warning
            config.propagators = [.traceContext]
            config.metrics.enabled = false
            config.logs.enabled = false
            config.traces.enabled = true
            // The router decides which requests are recorded before it makes any span
            // (`RequestTrace.sampled`: a request not recorded costs nothing); what reaches the
            // tracer is recorded.
            config.traces.sampler = .parentBasedAlwaysOn
            config.traces.exporter = .otlp
            config.traces.otlpExporter.endpoint = settings.endpointURL
            config.traces.otlpExporter.protocol = .grpc
            config.traces.otlpExporter.timeout = .seconds(5)
            config.traces.otlpExporter.onExportFailure = { _ in
                exportFailed()
                return .discard
            }
            let made = try OTel.makeTracingBackend(configuration: config)
            return (made.factory, made.service)
        }
    }
}
