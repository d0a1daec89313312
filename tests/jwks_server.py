"""A JWKS (and authorization server metadata) server under the tests'
control: a real HTTP server on 127.0.0.1, run in a thread, whose answers a
test switches at will (good keys, 500, garbage, an empty key set, hanging,
down) and which counts the requests it saw per path."""

import json
import threading
import time
from collections import Counter

from harness import Handler, HttpServer, free_port, poll


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

    With `tls` (an `ssl.SSLContext`, see `tls_ca.server_context`) it serves
    HTTPS only, and `server_names` lists the SNI name of every handshake
    (None: none sent).
    """

    def __init__(self, jwks=None, port=0, start=True, jwks_path="/certs", tls=None):
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
        self.tls = tls
        self.server_names = []
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
        self.port = port or free_port()
        if start:
            self.start()

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

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
        return poll(lambda: self.count(path) >= at_least, timeout, interval=0.02)

    # --- lifecycle -----------------------------------------------------

    def start(self):
        with self.lock:
            self.stopping = False
        self.server = HttpServer(JwksHandler, owner=self, port=self.port, tls=self.tls)
        return self

    def stop(self):
        """Stops listening; hanging requests are dropped unanswered."""
        if self.server is None:
            return
        with self.lock:
            self.stopping = True
            self.changed.notify_all()
        self.server.close()
        self.server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class JwksHandler(Handler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        outer = self.owner
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
                return self.answer(500, b'{"error":"boom"}', CLOSE)
            if mode == "garbage":
                return self.answer(200, b"<html>this is not a key set</html>", CLOSE)
            if mode == "empty":
                return self.answer(200, b'{"keys": []}', CLOSE)
            extra = {"cache-control": cache_control} if cache_control else {}
            return self.answer(200, json.dumps(jwks).encode(), {**CLOSE, **extra})
        if document is not None and mode != "error":
            return self.answer(200, json.dumps(document).encode(), CLOSE)
        return self.answer(404, b'{"error":"not found"}', CLOSE)


# Every answer closes its connection.
CLOSE = {"connection": "close"}
