"""Contract section 4.9: list answers show only what the caller may use, in
JSON and in SSE answers, with Content-Length kept right."""

import http.server
import json
import threading
import time

import pytest

from configs import ISSUER, RESOURCE, base_config, inline_provider
from harness import Envoy
from tokens import RsaKey, claims

KEY = RsaKey("lists")

TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in
         ["get_weather", "search", "set_config", "delete_everything"]]
RESULT = {"tools": TOOLS, "nextCursor": "c2", "cacheScope": "public"}


def config(**overrides):
    return base_config([inline_provider(KEY)], [
        {"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]},
        {"name": "readers read", "effect": "allow", "methods": ["tools/call"],
         "names": ["get_*", "search"], "roles": ["reader", "admin"]},
        {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"], "roles": ["admin"]},
        {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]},
    ], **overrides)


class ListServer:
    """Answers every POST with a tools/list result for the request's id, as
    JSON or as an SSE stream (progress notification first, chunks flushed
    separately) depending on the `x-answer` header."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                msgs = body if isinstance(body, list) else [body]
                answers = [{"jsonrpc": "2.0", "id": m["id"], "result": RESULT} for m in msgs]
                payload = json.dumps(answers if isinstance(body, list) else answers[0]).encode()
                if self.headers.get("x-answer") == "sse":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                                           "params": {"progressToken": 1, "progress": 0.5}})
                    stream = f"event: message\r\ndata: {progress}\r\n\r\nevent: message\r\ndata: ".encode() \
                        + payload + b"\r\n\r\n"
                    # Split mid-event so the filter must reassemble.
                    for part in (stream[:40], stream[40:len(stream) // 2], stream[len(stream) // 2:]):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                        time.sleep(0.02)
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def envoy(envoy_version):
    server = ListServer()
    with Envoy(envoy_version, config(), server.port) as e:
        yield e
    server.close()


def call(envoy, roles, sse=False, body=None):
    token = KEY.sign(claims(ISSUER, RESOURCE, roles=roles))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    if sse:
        headers["x-answer"] = "sse"
    return envoy.request("POST", "/mcp", body=body or {"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
                         headers=headers)


def sse_messages(body):
    out = []
    for event in body.decode().replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip() for line in event.split("\n") if line.startswith("data:")]
        if data:
            out.append(json.loads("\n".join(data)))
    return out


def names(result):
    return [t["name"] for t in result["tools"]]


def test_admin_sees_every_tool_it_may_call_in_json(envoy):
    status, headers, body = call(envoy, ["admin"])
    assert status == 200
    answer = json.loads(body)
    assert names(answer["result"]) == ["get_weather", "search", "set_config"]
    assert int(headers["content-length"][0]) == len(body)
    assert answer["result"]["cacheScope"] == "private"
    assert answer["result"]["nextCursor"] == "c2"


def test_reader_sees_only_allowed_tools_in_json(envoy):
    status, headers, body = call(envoy, ["reader"])
    assert status == 200
    assert names(json.loads(body)["result"]) == ["get_weather", "search"]
    assert int(headers["content-length"][0]) == len(body)


def test_caller_without_roles_sees_no_tools(envoy):
    status, _, body = call(envoy, [])
    assert status == 200
    assert json.loads(body)["result"]["tools"] == []


def test_reader_sees_only_allowed_tools_in_sse(envoy):
    status, headers, body = call(envoy, ["reader"], sse=True)
    assert status == 200
    assert "content-length" not in headers
    messages = sse_messages(body)
    assert messages[0]["method"] == "notifications/progress", "other events pass, in order"
    assert messages[1]["id"] == 7
    assert names(messages[1]["result"]) == ["get_weather", "search"]
    assert messages[1]["result"]["cacheScope"] == "private"


def test_each_list_result_in_a_batch_answer_is_filtered(envoy):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    status, _, body = call(envoy, ["reader"], body=batch)
    assert status == 200
    answers = json.loads(body)
    assert [names(a["result"]) for a in answers] == [["get_weather", "search"]] * 2


def test_filter_lists_false_leaves_lists_alone(envoy_version):
    server = ListServer()
    try:
        with Envoy(envoy_version, config(filter_lists=False), server.port) as e:
            status, _, body = call(e, ["reader"])
            assert status == 200
            assert names(json.loads(body)["result"]) == [t["name"] for t in TOOLS]
    finally:
        server.close()


def test_list_answer_over_the_limit_is_not_passed_unfiltered(envoy_version):
    server = ListServer()
    try:
        with Envoy(envoy_version, config(max_body_bytes=200), server.port) as e:
            status, _, body = call(e, ["reader"])
            assert b"delete_everything" not in body and b"set_config" not in body
            assert json.loads(body)["error"]["code"] == -32005
            assert status == 502
            status, _, body = call(e, ["reader"], sse=True)
            assert b"set_config" not in body
            assert any("error" in m for m in sse_messages(body))
            assert e.stats().get("wasmcustom.mcp_authz.list_unfilterable", 0) >= 2
    finally:
        server.close()


def test_removed_items_are_counted(envoy):
    before = envoy.stats().get("wasmcustom.mcp_authz.list_items_removed", 0)
    call(envoy, ["reader"])
    assert envoy.stats()["wasmcustom.mcp_authz.list_items_removed"] == before + 2
