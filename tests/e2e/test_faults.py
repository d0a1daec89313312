"""README "Hardening" (fault tests in real Envoy) and "Failure behaviour":
faults on the request and response paths: a huge body, a client that
hangs up while its body is being read, an upstream that dies in the middle
of a filtered SSE list answer. After each, the filter still answers
correctly and nothing refused reached the upstream. (The JWKS faults are in
`test_remote_keys.py`.)"""

import json
import socket
import time

import pytest

from configs import ISSUER, RESOURCE, base_config, inline_provider
from harness import Envoy, Handler, HttpServer, RecordingUpstream
from mcp_client import ACCEPT, call, post, rpc
from tokens import RsaKey, claims

KEY = RsaKey("faults")


def config(**overrides):
    return base_config([inline_provider(KEY)], [
        {"name": "lists", "effect": "allow", "methods": ["tools/list"]},
        {"name": "readers", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"], "roles": ["reader"]},
    ], **overrides)


TOKEN = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], ttl=3600))


def still_serves(envoy, upstream):
    """The filter answers correctly after the fault."""
    upstream.clear()
    assert post(envoy, call("get_weather"), TOKEN)[0] == 200
    assert post(envoy, call("set_config"), TOKEN)[0] == 403
    assert post(envoy, call("get_weather"), content_type=None)[0] == 401
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
        status, _, body = post(envoy, big, TOKEN, timeout=30)
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


class DyingSseHandler(Handler):
    """Answers a tools/list with an SSE stream that sends one complete event
    (a progress notification), then half of the list result, then resets
    the connection."""

    def do_POST(self):
        self.read_body()
        progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": 1, "progress": 1}})
        result = json.dumps({"jsonrpc": "2.0", "id": 9, "result": {"tools": [
            {"name": "get_weather"}, {"name": "set_config"}, {"name": "drop_tables"}]}})
        first = f"event: message\ndata: {progress}\n\n".encode()
        half = f"event: message\ndata: {result}".encode()[:-5]  # holds set_config, unfinished
        self.start_chunked("text/event-stream")
        for part in (first, half):
            self.send_chunk(part)
            time.sleep(0.05)
        self.reset()


def post_until_closed(port, body, headers):
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
    dying = HttpServer(DyingSseHandler)
    healthy = RecordingUpstream()
    try:
        with Envoy(envoy_version, config(), dying.port) as e:
            got = post_until_closed(e.port, rpc("tools/list", id=9),
                                    {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                                     "Accept": ACCEPT})
            assert b"notifications/progress" in got, "the complete event before the reset passed"
            assert b"set_config" not in got and b"drop_tables" not in got, \
                "no part of the unfinished list event escaped unfiltered"
            # The filter is still answering on this Envoy.
            status, _, _ = post(e, call("set_config"), TOKEN)
            assert status == 403
            status, _, _ = e.request("GET", "/mcp")
            assert status == 401
    finally:
        dying.close()
        healthy.close()
