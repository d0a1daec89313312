"""README "List filtering" (and `filter_lists` in "Configuration
reference"): list answers show only what the caller may use, in JSON and in
SSE answers, with Content-Length kept right, and are counted
(`list_items_removed`). The answers the filter cannot read are in
`test_answers.py`."""

import json
import time

import pytest

from configs import ISSUER, RESOURCE, base_config, inline_provider
from harness import Envoy, Handler, HttpServer
from mcp_client import ACCEPT, post, rpc
from tokens import RsaKey, claims
from wire import sse_messages

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


class ListHandler(Handler):
    """Answers every POST with a tools/list result for the request's id, as
    JSON or as an SSE stream (progress notification first, chunks flushed
    separately) depending on the `x-answer` header."""

    def do_POST(self):
        body = json.loads(self.read_body())
        msgs = body if isinstance(body, list) else [body]
        answers = [{"jsonrpc": "2.0", "id": m["id"], "result": RESULT} for m in msgs]
        payload = json.dumps(answers if isinstance(body, list) else answers[0]).encode()
        if self.headers.get("x-answer") != "sse":
            return self.answer(200, payload)
        self.start_chunked("text/event-stream")
        progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": 1, "progress": 0.5}})
        stream = f"event: message\r\ndata: {progress}\r\n\r\nevent: message\r\ndata: ".encode() \
            + payload + b"\r\n\r\n"
        # Split mid-event so the filter must reassemble.
        for part in (stream[:40], stream[40:len(stream) // 2], stream[len(stream) // 2:]):
            self.send_chunk(part)
            time.sleep(0.02)
        self.send_chunk(b"")


@pytest.fixture(scope="module")
def envoy(envoy_version):
    server = HttpServer(ListHandler)
    with Envoy(envoy_version, config(), server.port) as e:
        yield e
    server.close()


def list_tools(envoy, roles, sse=False, body=None):
    """POSTs `body` (default: a tools/list) for a caller with `roles`;
    `sse` asks the upstream for an event stream."""
    token = KEY.sign(claims(ISSUER, RESOURCE, roles=roles))
    headers = {"Accept": ACCEPT, **({"x-answer": "sse"} if sse else {})}
    return post(envoy, body or rpc("tools/list", id=7), token, headers)


def names(result):
    return [t["name"] for t in result["tools"]]


def test_admin_sees_every_tool_it_may_call_in_json(envoy):
    status, headers, body = list_tools(envoy, ["admin"])
    assert status == 200
    answer = json.loads(body)
    assert names(answer["result"]) == ["get_weather", "search", "set_config"]
    assert int(headers["content-length"][0]) == len(body)
    assert answer["result"]["cacheScope"] == "private"
    assert answer["result"]["nextCursor"] == "c2"


def test_reader_sees_only_allowed_tools_in_json(envoy):
    status, headers, body = list_tools(envoy, ["reader"])
    assert status == 200
    assert names(json.loads(body)["result"]) == ["get_weather", "search"]
    assert int(headers["content-length"][0]) == len(body)


def test_caller_without_roles_sees_no_tools(envoy):
    status, _, body = list_tools(envoy, [])
    assert status == 200
    assert json.loads(body)["result"]["tools"] == []


def test_reader_sees_only_allowed_tools_in_sse(envoy):
    status, headers, body = list_tools(envoy, ["reader"], sse=True)
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
    status, _, body = list_tools(envoy, ["reader"], body=batch)
    assert status == 200
    answers = json.loads(body)
    assert [names(a["result"]) for a in answers] == [["get_weather", "search"]] * 2


def test_filter_lists_false_leaves_lists_alone(envoy_version):
    server = HttpServer(ListHandler)
    try:
        with Envoy(envoy_version, config(filter_lists=False), server.port) as e:
            status, _, body = list_tools(e, ["reader"])
            assert status == 200
            assert names(json.loads(body)["result"]) == [t["name"] for t in TOOLS]
    finally:
        server.close()


def test_list_answer_over_the_limit_is_not_passed_unfiltered(envoy_version):
    server = HttpServer(ListHandler)
    try:
        with Envoy(envoy_version, config(max_body_bytes=200), server.port) as e:
            status, _, body = list_tools(e, ["reader"])
            assert b"delete_everything" not in body and b"set_config" not in body
            assert json.loads(body)["error"]["code"] == -32005
            assert status == 502
            status, _, body = list_tools(e, ["reader"], sse=True)
            assert b"set_config" not in body
            assert any("error" in m for m in sse_messages(body))
            assert e.stats().get("wasmcustom.mcp_authz.list_unfilterable", 0) >= 2
    finally:
        server.close()


def test_removed_items_are_counted(envoy):
    before = envoy.stats().get("wasmcustom.mcp_authz.list_items_removed", 0)
    list_tools(envoy, ["reader"])
    assert envoy.stats()["wasmcustom.mcp_authz.list_items_removed"] == before + 2
