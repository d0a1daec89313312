"""Runs the real Envoy binary with the freshly built filter, and the small
servers the end-to-end tests need, on free loopback ports. `ManagedProcess`
starts, waits for and stops every server the tests run as a subprocess:
Envoy here, the MCP server (`mcp_upstream.py`) and the interop tests'
authorization server (`interop/stack.py`). `HttpServer` and `Handler` are
the base of every HTTP server the tests write by hand and run in a thread:
the recording upstream here, the issuer's keys (`jwks_server.py`) and the
upstreams a test scripts itself."""

import http.client
import http.server
import json
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "target/wasm32-wasip1/release/mcp_authz.wasm"
ENVOY_VERSIONS = ["1.40.0", "1.36.4"]
# How Envoy names the filter's counters in /stats.
COUNTER_PREFIX = "wasmcustom.mcp_authz."


def envoy_binary(version):
    venv = ROOT / ".venvs" / f"envoy-{version}"
    found = sorted(venv.glob("lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        raise RuntimeError(f"Envoy {version} is not installed; run `make setup-envoy`")
    return str(found[0])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster(name, port, http2=False, http1_trailers=False):
    """A cluster of one endpoint on 127.0.0.1:`port`, spoken to over HTTP/2
    (`http2`), or HTTP/1.1 reading the upstream's chunked trailers
    (`http1_trailers`), or plain HTTP/1.1."""
    c = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }
    if http2 or http1_trailers:
        protocol = ({"http2_protocol_options": {}} if http2
                    else {"http_protocol_options": {"enable_trailers": True}})
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": protocol,
            }}
    return c


def wasm_filter(plugin_config, wasm=WASM):
    """The filter exactly as the README wires it."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "mcp_authz",
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config),
                },
                "fail_open": False,
                "allow_on_headers_stop_iteration": True,
            },
        },
    }


def bootstrap(listener_port, admin_port, plugin_config, upstream_port, clusters=(), filters=None,
              hcm=None, upstream_http2=False, routes=(), buffer_limit=None, trailers_port=None,
              upstream_http1_trailers=False):
    """An Envoy bootstrap: one listener with the filter (or `filters`) in
    front of the `upstream` cluster; `routes` are matched before the one to
    `upstream`; `hcm` is merged into the HttpConnectionManager (e.g.
    `http_protocol_options`); `buffer_limit`, when set, is the listener's and
    every cluster's `per_connection_buffer_limit_bytes`. With
    `trailers_port`, a second listener there, the same but for HTTP/1.1
    trailers (`enable_trailers`). The `upstream` cluster speaks HTTP/2
    (`upstream_http2`), HTTP/1.1 with trailers (`upstream_http1_trailers`)
    or plain HTTP/1.1."""
    http_filters = filters if filters is not None else [wasm_filter(plugin_config)]
    http_filters = list(http_filters) + [{
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }]
    def listener(name, port, extra):
        return {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "route_config": {"virtual_hosts": [{
                        "name": "mcp", "domains": ["*"],
                        "routes": list(routes) + [{"match": {"prefix": "/"},
                                                   "route": {"cluster": "upstream", "timeout": "30s"}}],
                    }]},
                    "http_filters": http_filters,
                    **extra,
                },
            }]}],
        }

    listeners = [listener("mcp", listener_port, hcm or {})]
    if trailers_port:
        listeners.append(listener("mcp_trailers", trailers_port,
                                  {**(hcm or {}), "http_protocol_options": {"enable_trailers": True}}))
    boot = {
        # Dynamic (ECDS) configuration needs a node identity.
        "node": {"id": "mcp-authz-test", "cluster": "mcp-authz-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [cluster("upstream", upstream_port, http2=upstream_http2,
                                 http1_trailers=upstream_http1_trailers)] + list(clusters),
        },
    }
    if buffer_limit:
        resources = boot["static_resources"]
        for item in resources["listeners"] + resources["clusters"]:
            item["per_connection_buffer_limit_bytes"] = buffer_limit
    return boot


class ManagedProcess:
    """A server in a subprocess, its stdout and stderr written to `log_path`:
    `start` returns once `ready()` holds, failing at once if the process
    exits first; `stop` terminates it (kills it after 10 s). Use it as a
    context manager; it is always torn down. A subclass sets `label` and
    `log_path` and defines `command()` and `ready()`; `cwd`, when set, is
    where the command runs."""

    label = "the process"
    cwd = None
    # What `ready()` may raise while the process is still coming up.
    not_yet = (OSError,)
    proc = None
    log = None

    def command(self):
        raise NotImplementedError

    def ready(self):
        """True once the process serves."""
        raise NotImplementedError

    def exited(self):
        """The exception for a process that ended before it was ready."""
        return RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")

    def start(self, timeout=30):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, cwd=self.cwd)
        try:
            self.wait_for(self.ready, timeout, "become ready")
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for(self, check, timeout, what, not_yet=None, interval=0.05):
        """Calls `check` every `interval` seconds until it returns something
        true. Raises `exited()` as soon as the process has ended, and a
        RuntimeError after `timeout` seconds; `not_yet` (default: the class's)
        are the exceptions that only mean "not yet"."""
        not_yet = self.not_yet if not_yet is None else not_yet
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise self.exited()
            try:
                if check():
                    return
            except not_yet as e:
                last = e
            time.sleep(interval)
        raise RuntimeError(f"{self.label} did not {what} within {timeout} s (last error: {last!r}):\n"
                           + self.logs()[-4000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def logs(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""


class Envoy(ManagedProcess):
    """A running Envoy. Use as a context manager; it is always torn down."""

    label = "Envoy"

    def __init__(self, version, plugin_config, upstream_port, clusters=(), concurrency=1, filters=None,
                 hcm=None, upstream_http2=False, routes=(), buffer_limit=None, trailers_listener=False,
                 upstream_http1_trailers=False):
        self.version = version
        self.port = free_port()
        # A second listener, for HTTP/1.1 with trailers (`wire.TRANSPORTS`).
        self.trailers_port = free_port() if trailers_listener else None
        self.admin_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mcp-authz-envoy-")
        self.config_path = os.path.join(self.dir, "envoy.json")
        self.log_path = os.path.join(self.dir, "envoy.log")
        if callable(plugin_config):
            # A configuration that names the listener's own URL (its `resource`).
            plugin_config = plugin_config(self.port)
        with open(self.config_path, "w") as f:
            json.dump(bootstrap(self.port, self.admin_port, plugin_config, upstream_port, clusters, filters,
                                hcm, upstream_http2, routes, buffer_limit, self.trailers_port,
                                upstream_http1_trailers), f)
        self.concurrency = concurrency

    def command(self, *extra):
        return [envoy_binary(self.version), "-c", self.config_path, "--concurrency",
                str(self.concurrency), "--log-level", "info", "--base-id", str(self.admin_port), *extra]

    def ready(self):
        status, _, body = request(self.admin_port, "GET", "/ready", timeout=1)
        return status == 200 and body.strip() == b"LIVE"

    def exited(self):
        return EnvoyExited(self.proc.returncode, self.logs())

    def request(self, method, path, body=None, headers=None, timeout=10):
        return request(self.port, method, path, body, headers, timeout)

    def port_for(self, transport):
        """The listener a client of `transport` (`wire.TRANSPORTS`) uses:
        the one with `enable_trailers` for "h1-trailers", else the default
        one (HTTP/2 needs no setting for trailers)."""
        if transport == "h1-trailers":
            if not self.trailers_port:
                raise RuntimeError("this Envoy has no HTTP/1.1 trailers listener (trailers_listener=True)")
            return self.trailers_port
        return self.port

    def stats(self, prefix="wasmcustom.mcp_authz"):
        """Counters from the admin endpoint, as a dict."""
        _, _, body = request(self.admin_port, "GET", "/stats?filter=" + prefix)
        out = {}
        for line in body.decode().splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name.strip()] = int(value)
        return out

    def counters(self):
        """The filter's counters under the README's names (`allowed`,
        `denied.no_token`, ...)."""
        return {name[len(COUNTER_PREFIX):]: value for name, value in self.stats(COUNTER_PREFIX).items()
                if name.startswith(COUNTER_PREFIX)}

    def decisions(self, kind=None):
        """The filter's decision log (README "Observability"): its JSON lines
        in Envoy's log, in order; only those of `kind` ("deny", "would_deny",
        "allow") when given."""
        out = []
        for line in self.logs().splitlines():
            start = line.find('{"')
            if start < 0 or '"mcp_authz"' not in line:
                continue
            try:
                decision = json.loads(line[start:])
            except ValueError:
                continue
            if isinstance(decision, dict) and "mcp_authz" in decision and kind in (None, decision["mcp_authz"]):
                out.append(decision)
        return out


class EnvoyExited(Exception):
    def __init__(self, code, logs):
        super().__init__(f"Envoy exited with {code}")
        self.code = code
        self.logs = logs


def request(port, method, path, body=None, headers=None, timeout=10):
    """One HTTP/1.1 request; `body` a dict or list (sent as JSON), str or
    bytes; `headers` a dict, or (name, value) pairs in which a name may
    repeat. Returns (status, headers as lower-cased dict of lists, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        if isinstance(headers, (list, tuple)):
            conn.putrequest(method, path)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None or method.upper() in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
        else:
            conn.request(method, path, body=body, headers=headers or {})
        return read_response(conn)
    finally:
        conn.close()


def poll(check, timeout, interval=0.05):
    """Calls `check` until it returns something true or `timeout` seconds
    have passed; returns its last result."""
    deadline = time.time() + timeout
    while True:
        result = check()
        if result or time.time() >= deadline:
            return result
        time.sleep(interval)


def read_response(conn):
    """The answer on an `http.client` connection: (status, headers as
    lower-cased dict of lists, body)."""
    resp = conn.getresponse()
    data = resp.read()
    hdrs = {}
    for k, v in resp.getheaders():
        hdrs.setdefault(k.lower(), []).append(v)
    return resp.status, hdrs, data


class Handler(http.server.BaseHTTPRequestHandler):
    """The base of the tests' hand-written HTTP servers: HTTP/1.1, no access
    log, and the few ways they answer. `self.server.owner` is the object
    that runs the server (what the handler reports to or reads its script
    from)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    @property
    def owner(self):
        return self.server.owner

    def read_body(self):
        """The request body, by `Content-Length` or chunked (how Envoy
        forwards an HTTP/2 request that came without a length)."""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status, body, headers=None):
        """A whole answer with `content-type: application/json` and a
        `content-length` (no body for HEAD), then `headers`."""
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def start_chunked(self, content_type):
        """The head of a 200 answer whose body follows in `send_chunk`s."""
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def send_chunk(self, data):
        """One chunk, sent at once; an empty one ends the body."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def reset(self):
        """Ends the connection with a TCP reset, as an upstream that dies
        does: no more requests are read from it, and once the handler
        returns its socket closes with a zero linger time, before the
        server would shut it down cleanly."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


class HttpServer(http.server.ThreadingHTTPServer):
    """Serves `handler` (a `Handler` subclass) on 127.0.0.1:`port` (0: a
    free port) from a daemon thread, from construction until `close()`;
    handlers reach `owner` as `self.owner`. With `tls` (an
    `ssl.SSLContext`) it speaks HTTPS: each connection's handshake runs in
    its own thread, and one the client gives up (e.g. on a certificate it
    does not trust) ends the connection without a request."""

    # Envoy may release many held requests at once (e.g. after keys
    # arrive); the default backlog of 5 would refuse some.
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, handler, owner=None, port=0, tls=None):
        super().__init__(("127.0.0.1", port), handler)
        self.owner = owner
        self.tls = tls
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def finish_request(self, request, client_address):
        if self.tls is None:
            return super().finish_request(request, client_address)
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()

    def close(self):
        self.shutdown()
        self.server_close()


class RecordingHandler(Handler):
    def handle_any(self):
        body = self.read_body()
        seen = {"method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "header_list": [(k.lower(), v) for k, v in self.headers.items()],
                "body": body.decode(errors="replace")}
        with self.owner.lock:
            self.owner.requests.append(seen)
        self.answer(200, json.dumps({"jsonrpc": "2.0", "id": None, "result": {"echo": True}}).encode())

    do_GET = do_POST = do_DELETE = do_OPTIONS = do_PUT = do_HEAD = handle_any


class RecordingUpstream:
    """A plain HTTP upstream that records every request it sees and answers
    with a JSON echo. Tests use it to prove what reached (or never reached)
    the server behind the filter."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.server = HttpServer(RecordingHandler, owner=self)
        self.port = self.server.port

    def clear(self):
        with self.lock:
            self.requests.clear()

    def close(self):
        self.server.close()
