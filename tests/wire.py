"""Requests and answers on the wire beyond what `http.client` sends: HTTP/2
with prior knowledge (any `:method` spelling, request trailers, bodies past
the flow-control window, streams read until a test has what it waits for),
HTTP/1.1 written and read by hand (chunked bodies with trailers, answers
with their trailers), and a scripted upstream that answers over HTTP/1.1
(chunked with trailers when asked) or HTTP/2 with whatever status, headers,
body chunks and trailers a test sets, recording every request it receives.

`TRANSPORTS` names the ways a client reaches the filter that every case of
issue 12 runs over: HTTP/1.1 on a listener with Envoy's default codec
(which drops trailers), HTTP/1.1 on a listener with `enable_trailers`, and
HTTP/2; `send` sends one request over any of them to an `Envoy` started
with `trailers_listener=True`.

The tests use these to send the shapes an attacker would (trailers releasing
a held request, a lower-case `post`) and to play an upstream that answers the
way real ones sometimes do (trailers after a list, compressed or mislabelled
answers, ids echoed as strings)."""

import json
import socket
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


# How a client reaches the filter: HTTP/1.1 on the listener with Envoy's
# default codec, HTTP/1.1 on the listener with `enable_trailers`, HTTP/2.
TRANSPORTS = ["h1", "h1-trailers", "h2"]


@dataclass
class Reply:
    """What the client got: status, headers (lower-case name -> list of
    values), body, trailers (same shape as headers). Unpacks as
    `(status, headers, body)`, like `harness.request`."""

    status: int
    headers: dict
    body: bytes
    trailers: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.status, self.headers, self.body))


def send(transport, envoy, method, path, headers=(), body=None, trailers=(), timeout=10):
    """One request over `transport` (one of `TRANSPORTS`) to `envoy` (started
    with `trailers_listener=True`); `headers` a dict or (name, value) pairs.
    Returns a `Reply`."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    port = envoy.port_for(transport)
    if transport == "h2":
        return h2_request(port, method, path, headers, body, trailers, timeout)
    return h1_request(port, method, path, headers, body, trailers, timeout)


def sse_messages(body):
    """The JSON-RPC messages of a `text/event-stream` body, in order (events
    without data, such as priming events, are skipped)."""
    out = []
    for event in body.decode().replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip() for line in event.split("\n") if line.startswith("data:")]
        if data and "".join(data).strip():
            out.append(json.loads("\n".join(data)))
    return out


def _collect(pairs):
    out = {}
    for name, value in pairs:
        name = name.decode(errors="replace") if isinstance(name, bytes) else name
        value = value.decode(errors="replace") if isinstance(value, bytes) else value
        out.setdefault(name.lower(), []).append(value)
    return out


def h2_request(port, method, path, headers=(), body=None, trailers=(), timeout=10):
    """One HTTP/2 request with prior knowledge. `method` is sent exactly as
    given; `trailers` (name, value pairs), when given, follow the body. The
    body goes out as fast as the peer's flow-control windows allow; the
    answer is read to the end of its stream."""
    return _h2_exchange(port, method, path, headers, body, trailers, timeout)


def h2_read_until(port, method, path, headers, done, timeout=10):
    """An HTTP/2 request without a body whose answer is read only until
    `done(body so far)` holds (an event stream that stays open); the
    connection is then closed. Raises when the stream ends first."""
    reply = _h2_exchange(port, method, path, headers, None, (), timeout, done)
    if not done(reply.body):
        raise AssertionError(f"the stream ended without what was awaited: {reply.body[:500]!r}")
    return reply


def _h2_exchange(port, method, path, headers, body, trailers, timeout, done=None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    try:
        conn.initiate_connection()
        request_headers = [(":method", method), (":path", path), (":scheme", "http"),
                           (":authority", "mcp.example.com")]
        request_headers += [(k.lower(), v) for k, v in headers]
        pending = body.encode() if isinstance(body, str) else (body or b"")
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, request_headers, end_stream=not pending and not trailers)
        trailers_due = bool(trailers)
        status, response_headers, response_trailers, data = None, {}, {}, b""
        while True:
            # As much of the body as the windows take, then the trailers.
            while pending:
                size = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size, len(pending))
                if size <= 0:
                    break
                conn.send_data(stream, pending[:size], end_stream=size == len(pending) and not trailers)
                pending = pending[size:]
            if not pending and trailers_due:
                conn.send_headers(stream, list(trailers), end_stream=True)
                trailers_due = False
            sock.sendall(conn.data_to_send())
            if done is not None and status is not None and done(data):
                return Reply(status, response_headers, data, response_trailers)
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the stream ended")
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    response_headers = _collect(event.headers)
                    status = int(response_headers.pop(":status")[0])
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    response_trailers = _collect(event.headers)
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"stream reset: {event.error_code}")
                elif isinstance(event, h2.events.StreamEnded):
                    return Reply(status, response_headers, data, response_trailers)
    finally:
        sock.close()


def _send_data(conn, stream, data, end_stream):
    """Sends `data` in frames the peer accepts (the scripted upstream's
    answers stay within the windows Envoy grants)."""
    size = conn.max_outbound_frame_size
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    for i, piece in enumerate(pieces):
        conn.send_data(stream, piece, end_stream=end_stream and i + 1 == len(pieces))


def h1_request(port, method, path, headers=(), body=None, trailers=(), timeout=10, host="mcp.example.com"):
    """One HTTP/1.1 request written by hand (`method`, the request target
    `path` — an absolute URI too — and header names sent exactly as given)
    on a connection of its own: the body with a `Content-Length`, or chunked
    with `trailers` when there are any. The answer is read as HTTP/1.1
    frames it, trailers included. Returns a `Reply`."""
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if trailers:
        lines.append("Transfer-Encoding: chunked")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if body:
            wire += f"{len(body):x}\r\n".encode() + body + b"\r\n"
        wire += b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n"
    else:
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(wire)
        return _read_h1_answer(_Reader(sock), method.upper() == "HEAD")


class _Reader:
    """Buffered reads off a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the middle of an answer")
        self.buffer += chunk

    def line(self):
        while b"\r\n" not in self.buffer:
            self._more()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def exactly(self, n):
        while len(self.buffer) < n:
            self._more()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def rest(self):
        while True:
            try:
                self._more()
            except ConnectionError:
                out, self.buffer = self.buffer, b""
                return out


def _read_fields(reader):
    """Header (or trailer) lines up to the empty one, as `_collect` makes them."""
    pairs = []
    while True:
        line = reader.line()
        if not line:
            return _collect(pairs)
        name, _, value = line.partition(b":")
        pairs.append((name.strip(), value.strip()))


def _read_h1_answer(reader, head_request=False):
    status = int(reader.line().split(b" ", 2)[1])
    headers = _read_fields(reader)
    trailers = {}
    if head_request or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        body = b""
        while True:
            size = int(reader.line().split(b";")[0], 16)
            if size == 0:
                trailers = _read_fields(reader)
                break
            body += reader.exactly(size)
            reader.exactly(2)
    elif "content-length" in headers:
        body = reader.exactly(int(headers["content-length"][0]))
    else:
        body = reader.rest()
    return Reply(status, headers, body, trailers)


@dataclass
class Script:
    """An upstream answer: status, headers (name, value pairs, sent as
    given), body chunks, trailers. Over HTTP/1.1 the body goes with a
    `Content-Length`, or chunked (one chunk each, then the trailers) when
    there are trailers or `chunked` is set."""

    status: int = 200
    headers: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    trailers: list = field(default_factory=list)
    chunked: bool = False


class ScriptedUpstream:
    """An upstream on 127.0.0.1 that answers every request with `script` (a
    `Script`, or a function of the request returning one) and records each
    request: {"method", "path", "headers": [(name, value)], "body",
    "trailers": [(name, value)] (HTTP/2)}. Speaks HTTP/2 with prior knowledge
    when `http2`, else HTTP/1.1. Header values may be bytes (sent as they
    are, even when they are not UTF-8)."""

    def __init__(self, http2=False):
        self.http2 = http2
        self.script = Script()
        self.requests = []
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def clear(self):
        with self.lock:
            self.requests.clear()

    def close(self):
        self.closed = True
        self.server.close()

    def _record(self, request):
        with self.lock:
            self.requests.append(request)
        script = self.script
        return script(request) if callable(script) else script

    def _accept(self):
        while not self.closed:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            target = self._serve_h2 if self.http2 else self._serve_h1
            threading.Thread(target=target, args=(sock,), daemon=True).start()

    def _serve_h1(self, sock):
        with sock:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
                lower = {k.lower(): v for k, v in headers}
                body = b""
                if "content-length" in lower:
                    n = int(lower["content-length"])
                    while len(buffer) < n:
                        buffer += sock.recv(65536)
                    body, buffer = buffer[:n], buffer[n:]
                elif lower.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        while b"\r\n" not in buffer:
                            buffer += sock.recv(65536)
                        size_line, _, buffer = buffer.partition(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            while b"\r\n\r\n" not in buffer and not buffer.startswith(b"\r\n"):
                                buffer += sock.recv(65536)
                            if buffer.startswith(b"\r\n"):
                                buffer = buffer[2:]
                            else:
                                buffer = buffer.partition(b"\r\n\r\n")[2]
                            break
                        while len(buffer) < size + 2:
                            buffer += sock.recv(65536)
                        body += buffer[:size]
                        buffer = buffer[size + 2:]
                script = self._record({"method": method, "path": path, "headers": headers, "body": body})
                chunks = [c.encode() if isinstance(c, str) else c for c in script.chunks]
                out = [f"HTTP/1.1 {script.status} X".encode()]
                out += [k.encode() + b": " + (v if isinstance(v, bytes) else v.encode())
                        for k, v in script.headers]
                if script.trailers or script.chunked:
                    out.append(b"transfer-encoding: chunked")
                    payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
                    payload += b"0\r\n" + b"".join(
                        f"{k}: {v}\r\n".encode() for k, v in script.trailers) + b"\r\n"
                else:
                    payload = b"".join(chunks)
                    out.append(f"content-length: {len(payload)}".encode())
                sock.sendall(b"\r\n".join(out) + b"\r\n\r\n" + payload)

    def _serve_h2(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        conn.initiate_connection()
        pending = {}
        with sock:
            sock.sendall(conn.data_to_send())
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        pending[event.stream_id] = {"headers": [
                            (k.decode(), v.decode()) for k, v in event.headers], "body": b""}
                    elif isinstance(event, h2.events.DataReceived):
                        pending[event.stream_id]["body"] += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.TrailersReceived):
                        pending[event.stream_id]["trailers"] = [
                            (k.decode(), v.decode()) for k, v in event.headers]
                    elif isinstance(event, h2.events.StreamEnded):
                        req = pending.pop(event.stream_id)
                        pseudo = dict(h for h in req["headers"] if h[0].startswith(":"))
                        script = self._record({
                            "method": pseudo.get(":method"), "path": pseudo.get(":path"),
                            "headers": [h for h in req["headers"] if not h[0].startswith(":")],
                            "body": req["body"], "trailers": req.get("trailers", [])})
                        chunks = [c.encode() if isinstance(c, str) else c for c in script.chunks]
                        headers = [(":status", str(script.status))] + list(script.headers)
                        conn.send_headers(event.stream_id, headers,
                                          end_stream=not chunks and not script.trailers)
                        for i, chunk in enumerate(chunks):
                            last = i + 1 == len(chunks) and not script.trailers
                            _send_data(conn, event.stream_id, chunk, end_stream=last)
                        if script.trailers:
                            conn.send_headers(event.stream_id, list(script.trailers), end_stream=True)
                sock.sendall(conn.data_to_send())
