"""A JWKS (and authorization server metadata) server under the tests'
control: a real HTTP server on 127.0.0.1, run in a thread, whose answers a
test switches at will (good keys, 500, garbage, an empty key set, hanging,
down) and which counts the requests it saw per path."""

import http.server
import json
import socket
import threading
import time
from collections import Counter


class JwksServer:
    """Serves `jwks` at `jwks_path` and, when set, metadata documents at
    their paths. `mode` decides every answer:

    - ``"ok"``: 200 with the key set (and `cache_control`, if set), after
      `delay` seconds (a slow issuer) when set;
    - ``"error"``: 500;
    - ``"garbage"``: 200 with a body that is not JSON;
    - ``"empty"``: 200 with ``{"keys": []}``;
    - ``"hang"``: accepts the request and never answers (until the mode
      changes or the server stops);
    - ``"close"``: reads the request and closes the connection unanswered.

    `stop()` closes the listening socket (connection refused from then on);
    `start()` listens again on the same port. Every answer closes its
    connection, so a stopped server has no connection left open.
    """

    def __init__(self, jwks=None, port=0, start=True, jwks_path="/certs"):
        self.jwks = jwks if jwks is not None else {"keys": []}
        self.jwks_path = jwks_path
        self.mode = "ok"
        self.cache_control = None
        # Seconds to wait before answering (a slow issuer).
        self.delay = 0
        # path -> dict served as application/json (discovery documents).
        self.documents = {}
        self.counts = Counter()
        # path -> monotonic times of the requests, in order.
        self.times = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = False
        self.server = None
        self.thread = None
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        if start:
            self.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    # --- control -------------------------------------------------------

    def set(self, mode=None, jwks=None, cache_control=None, delay=None):
        with self.lock:
            if delay is not None:
                self.delay = delay
            if mode is not None:
                self.mode = mode
            if jwks is not None:
                self.jwks = jwks
            if cache_control is not None:
                self.cache_control = cache_control
            self.changed.notify_all()

    def count(self, path=None):
        with self.lock:
            return self.counts[path or self.jwks_path]

    def request_times(self, path=None):
        with self.lock:
            return list(self.times.get(path or self.jwks_path, []))

    def total(self):
        with self.lock:
            return sum(self.counts.values())

    def wait_for(self, path=None, at_least=1, timeout=10):
        """Waits until `path` was asked for `at_least` times; returns whether it was."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.count(path) >= at_least:
                return True
            time.sleep(0.02)
        return False

    # --- lifecycle -----------------------------------------------------

    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                with outer.lock:
                    outer.counts[path] += 1
                    outer.times.setdefault(path, []).append(time.monotonic())
                    mode = outer.mode
                    while mode == "hang" and not outer.stopping:
                        outer.changed.wait(0.2)
                        mode = outer.mode
                    jwks, cache_control = outer.jwks, outer.cache_control
                    document = outer.documents.get(path)
                    delay = outer.delay
                if delay:
                    time.sleep(delay)
                if outer.stopping or mode == "close":
                    self.close_connection = True
                    return
                if path == outer.jwks_path:
                    if mode == "error":
                        return self.answer(500, b'{"error":"boom"}')
                    if mode == "garbage":
                        return self.answer(200, b"<html>this is not a key set</html>")
                    if mode == "empty":
                        return self.answer(200, b'{"keys": []}')
                    extra = {"cache-control": cache_control} if cache_control else {}
                    return self.answer(200, json.dumps(jwks).encode(), extra)
                if document is not None and mode != "error":
                    return self.answer(200, json.dumps(document).encode())
                return self.answer(404, b'{"error":"not found"}')

            def answer(self, status, body, extra=None):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("connection", "close")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        with self.lock:
            self.stopping = False
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stops listening; hanging requests are dropped unanswered."""
        if self.server is None:
            return
        with self.lock:
            self.stopping = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
