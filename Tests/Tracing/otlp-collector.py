#!/usr/bin/env python3
"""A minimal OTLP/gRPC trace collector for the tests: it takes TraceService/Export calls on
127.0.0.1 (a free port, printed as "listening on PORT") and writes every span it receives as one
JSON line to the file given as its argument; without one it only takes them (a sink for
benchmarks). Built on grpcio and the official opentelemetry-proto messages, so what it accepts
is what any collector accepts."""
import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else str(v)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path):
        self.out = open(path, "a", buffering=1) if path else None

    def Export(self, request, context):
        if self.out is None:
            return trace_service_pb2.ExportTraceServiceResponse()
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.out.write(json.dumps({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name, "kind": s.kind, "status": s.status.code,
                        "attributes": {a.key: value(a.value) for a in s.attributes},
                        "resource": resource,
                    }) + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(sys.argv[1] if len(sys.argv) > 1 else None), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
