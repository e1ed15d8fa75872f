"""A real OTLP/HTTP metrics receiver for the tests: decodes each request with opentelemetry-proto."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest, ExportMetricsServiceResponse


class Receiver:
    """Listens on 127.0.0.1:``port`` (0: any free port) and keeps every request it decodes."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.wrong_paths: list[str] = []
        received, wrong = self.requests, self.wrong_paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/metrics":  # as the OpenTelemetry Collector's OTLP/HTTP receiver does
                    wrong.append(self.path)
                    self.send_error(404)
                    return
                req = ExportMetricsServiceRequest()
                req.ParseFromString(body)
                received.append(req)
                out = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def latest(self) -> dict[str, list[tuple[dict[str, Any], float]]]:
        """Metric name -> [(attributes, value)] from the newest request (histograms: their count)."""
        out: dict[str, list[tuple[dict[str, Any], float]]] = {}
        if not self.requests:
            return out
        for rm in self.requests[-1].resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    points = getattr(m, kind).data_points
                    rows = out.setdefault(m.name, [])
                    for p in points:
                        attrs = {a.key: _value(a.value) for a in p.attributes}
                        if kind == "histogram":
                            rows.append((attrs, float(p.count)))
                        else:
                            rows.append((attrs, p.as_int if p.WhichOneof("value") == "as_int" else p.as_double))
        return out

    def resource(self) -> dict[str, Any]:
        rm = self.requests[-1].resource_metrics[0]
        return {a.key: _value(a.value) for a in rm.resource.attributes}


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value"))
