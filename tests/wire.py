"""Requests and answers on the wire beyond what `http.client` sends: HTTP/2
with prior knowledge (any `:method` spelling, request trailers), HTTP/1.1
chunked bodies with trailers, and a scripted upstream that answers over
HTTP/1.1 or HTTP/2 with whatever status, headers, body chunks and trailers a
test sets, recording every request it receives.

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


@dataclass
class Reply:
    """What the client got: status, headers (lower-case name -> list of
    values), body, trailers (same shape as headers)."""

    status: int
    headers: dict
    body: bytes
    trailers: dict = field(default_factory=dict)


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
    given; `trailers` (name, value pairs), when given, follow the body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    try:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        request_headers = [(":method", method), (":path", path), (":scheme", "http"),
                           (":authority", "mcp.example.com")]
        request_headers += [(k.lower(), v) for k, v in headers]
        if isinstance(body, str):
            body = body.encode()
        stream = conn.get_next_available_stream_id()
        end_after_headers = not body and not trailers
        conn.send_headers(stream, request_headers, end_stream=end_after_headers)
        if body:
            _send_data(conn, stream, body, end_stream=not trailers)
        if trailers:
            conn.send_headers(stream, list(trailers), end_stream=True)
        sock.sendall(conn.data_to_send())
        status, response_headers, response_trailers, data = None, {}, {}, b""
        while True:
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
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()


def _send_data(conn, stream, data, end_stream):
    """Sends `data` in frames the peer accepts (bodies here stay within the
    initial flow-control window of 64 KiB)."""
    size = conn.max_outbound_frame_size
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    for i, piece in enumerate(pieces):
        conn.send_data(stream, piece, end_stream=end_stream and i + 1 == len(pieces))


def h1_chunked_request(port, method, path, headers=(), body=b"", trailers=(), timeout=10):
    """One HTTP/1.1 request with a chunked body and trailers, written by
    hand. Returns (status, raw response head, body bytes as received)."""
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: mcp.example.com", "Transfer-Encoding: chunked",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if body:
        wire += f"{len(body):x}\r\n".encode() + body + b"\r\n"
    wire += b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n"
    return h1_exchange(port, wire, timeout)


def h1_exchange(port, wire, timeout=10):
    """Sends `wire` (a whole HTTP/1.1 request, byte for byte, asking the
    server to close) and reads the answer to the end. Returns (status, head
    as text, body bytes as received)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(wire)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode(errors="replace"), rest


@dataclass
class Script:
    """An upstream answer: status, headers (name, value pairs, sent as
    given), body chunks, trailers (HTTP/2 only)."""

    status: int = 200
    headers: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    trailers: list = field(default_factory=list)


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
                payload = b"".join(c.encode() if isinstance(c, str) else c for c in script.chunks)
                out = [f"HTTP/1.1 {script.status} X".encode()]
                out += [k.encode() + b": " + (v if isinstance(v, bytes) else v.encode())
                        for k, v in script.headers]
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
