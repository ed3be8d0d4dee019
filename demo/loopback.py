"""A small HTTP server on 127.0.0.1 that serves in-memory files (demo, tests, benchmarks).

It never binds anything but loopback. ``latency`` delays every response, to stand in for
a CDN across a real network (on bare loopback every client is CPU-bound).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "image/jpeg"
    status: int = 200
    headers: dict[str, str] | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class LoopbackServer:
    """Serve ``routes`` (path -> Route, bytes or handler) on 127.0.0.1 in a background thread."""

    def __init__(self, latency: float = 0.0, port: int = 0) -> None:
        self.latency = latency
        self.port = port
        self.routes: dict[str, Route | Handler] = {}
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def add(
        self,
        path: str,
        body: bytes | Route | Handler,
        content_type: str = "image/jpeg",
        status: int = 200,
    ) -> str:
        """Register a route and return its absolute URL."""
        if isinstance(body, bytes):
            body = Route(body=body, content_type=content_type, status=status)
        self.routes[path] = body
        return self.url(path)

    def url(self, path: str) -> str:
        if self._server is None:
            raise RuntimeError("server is not started")
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}{path}"

    def start(self) -> LoopbackServer:
        owner = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with owner._lock:
                    owner.hits[path] = owner.hits.get(path, 0) + 1
                if owner.latency:
                    time.sleep(owner.latency)
                route = owner.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "9")
                    self.end_headers()
                    self.wfile.write(b"not found")
                    return
                if callable(route):
                    route(self)
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                for name, value in (route.headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(route.body)

        try:
            self._server = _Server(("127.0.0.1", self.port), RequestHandler)
        except OSError:
            if not self.port:
                raise
            # The preferred port is taken: any free port will do.
            self._server = _Server(("127.0.0.1", 0), RequestHandler)
        # A short poll interval makes stop() (and every test using the server) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
