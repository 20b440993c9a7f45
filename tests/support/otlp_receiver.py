"""A minimal OTLP/gRPC trace receiver: what Jaeger's `otlp` receiver would get from vLLM.

Run with the test-model venv's Python (it has grpcio and opentelemetry-proto, both vLLM
dependencies): ``python otlp_receiver.py OUT_FILE`` listens on a free 127.0.0.1 port, prints
that port on its first line of stdout, and appends one JSON line per received span to OUT_FILE:
``{"trace_id", "span_id", "parent_span_id", "name", "service", "attributes"}``.
It stops after 10 minutes at most, so a test that forgets it cannot leave it behind for long.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LIFETIME_SECONDS = 600


def _value(v: Any) -> object:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in {"string_value", "bool_value", "int_value", "double_value"} else str(v)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out: str) -> None:
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        lines = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(
                        json.dumps(
                            {
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "name": span.name,
                                "service": resource.get("service.name"),
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                            }
                        )
                    )
        with self.lock, open(self.out, "a") as f:
            f.writelines(line + "\n" for line in lines)
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(sys.argv[1]), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination(timeout=LIFETIME_SECONDS)


if __name__ == "__main__":
    main()
