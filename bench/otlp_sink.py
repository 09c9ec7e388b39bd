"""A stand-in OpenTelemetry collector for benchmarks: answers 200 to every OTLP/HTTP
export and counts the bytes, so that a service with tracing on pays for encoding and
sending its spans, as it would to a real collector, without one installed.

    python -m bench.otlp_sink --port 4318      # then OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_received = {"exports": 0, "bytes": 0}
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        self.rfile.read(size)
        with _lock:
            _received["exports"] += 1
            _received["bytes"] += size
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # how much arrived, for the report
        with _lock:
            body = f"{_received['exports']} exports, {_received['bytes']} bytes\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=4318)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
