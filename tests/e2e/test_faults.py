"""Faults on the request and response paths: a huge body, a client that
hangs up while its body is being read, an upstream that dies in the middle
of a filtered SSE list answer. After each, the filter still answers
correctly and nothing refused reached the upstream."""

import json
import socket
import threading
import time

import pytest

from configs import ISSUER, RESOURCE, base_config, inline_provider
from harness import Envoy, RecordingUpstream
from tokens import RsaKey, claims

KEY = RsaKey("faults")


def config(**overrides):
    return base_config([inline_provider(KEY)], [
        {"name": "lists", "effect": "allow", "methods": ["tools/list"]},
        {"name": "readers", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"], "roles": ["reader"]},
    ], **overrides)


TOKEN = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], ttl=3600))
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def call(tool, id=1):
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool}}


def still_serves(envoy, upstream):
    """The filter answers correctly after the fault."""
    upstream.clear()
    assert envoy.request("POST", "/mcp", body=call("get_weather"), headers=AUTH)[0] == 200
    assert envoy.request("POST", "/mcp", body=call("set_config"), headers=AUTH)[0] == 403
    assert envoy.request("POST", "/mcp", body=call("get_weather"))[0] == 401
    assert [json.loads(r["body"])["params"]["name"] for r in upstream.requests] == ["get_weather"]


@pytest.fixture(scope="module")
def envoy(envoy_version, upstream):
    with Envoy(envoy_version, config(), upstream.port) as e:
        yield e


def test_ten_mib_body_is_refused_and_never_reaches_upstream(envoy, upstream):
    upstream.clear()
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "get_weather", "arguments": {"x": "a" * (10 * 1024 * 1024)}}})
    try:
        status, _, body = envoy.request("POST", "/mcp", body=big, headers=AUTH, timeout=30)
        assert status == 413
        assert TOKEN.encode() not in body
    except (ConnectionResetError, BrokenPipeError):
        pass  # Envoy may answer 413 and close before reading the rest
    assert upstream.requests == []
    still_serves(envoy, upstream)


def test_client_hanging_up_while_the_body_is_read(envoy, upstream):
    upstream.clear()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", envoy.port), timeout=5) as s:
            s.sendall(("POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n").encode()
                      + b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"set_')
            time.sleep(0.05)
    time.sleep(0.2)
    assert upstream.requests == [], "a half-sent body is never forwarded"
    still_serves(envoy, upstream)


class DyingSseUpstream:
    """Answers a tools/list with an SSE stream that sends one complete event
    (a progress notification), then half of the list result, then resets
    the connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            while len(rest) < length:
                rest += conn.recv(65536)
            progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                                   "params": {"progressToken": 1, "progress": 1}})
            result = json.dumps({"jsonrpc": "2.0", "id": 9, "result": {"tools": [
                {"name": "get_weather"}, {"name": "set_config"}, {"name": "drop_tables"}]}})
            first = f"event: message\ndata: {progress}\n\n".encode()
            half = f"event: message\ndata: {result}".encode()[:-5]  # holds set_config, unfinished
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for part in (first, half):
                conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                time.sleep(0.05)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        finally:
            conn.close()

    def close(self):
        self.stopping = True
        self.sock.close()


def raw_post(port, body, headers):
    """Reads whatever arrives until the connection ends; never raises on a reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        payload = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"POST /mcp HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return got


def test_upstream_reset_in_the_middle_of_a_filtered_sse_list(envoy_version):
    dying = DyingSseUpstream()
    healthy = RecordingUpstream()
    try:
        with Envoy(envoy_version, config(), dying.port) as e:
            got = raw_post(e.port, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"},
                           {**AUTH, "Accept": "application/json, text/event-stream"})
            assert b"notifications/progress" in got, "the complete event before the reset passed"
            assert b"set_config" not in got and b"drop_tables" not in got, \
                "no part of the unfinished list event escaped unfiltered"
            # The filter is still answering on this Envoy.
            status, _, _ = e.request("POST", "/mcp", body=call("set_config"), headers=AUTH)
            assert status == 403
            status, _, _ = e.request("GET", "/mcp")
            assert status == 401
    finally:
        dying.close()
        healthy.close()
