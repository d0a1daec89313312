"""README "Request handling" step 5 (the body of a `POST`) and step 3 (a
body where none belongs), end to end: what the filter reads is what the
server reads. Duplicate keys and escaped method names, content types,
malformed and non-JSON-RPC bodies, `max_body_bytes`, bodies arriving in
pieces. A real Envoy with the built filter in front of the official SDK's
MCP server (`mcp_client.SdkEnvoy`), on both Envoy versions; "refused" means
the client got the filter's answer and the server never saw the call."""

import http.client
import json
import time

import pytest

from harness import read_response
from mcp_client import (ACCEPT, ADMIN, CLIENT_META, MAX_BODY, META_JSON, MODERN, READER, SdkEnvoy,
                        assert_forbidden, assert_refused, modern_headers, post, raw_modern, raw_post,
                        result_text, tool_call)


@pytest.fixture(scope="module")
def envoy(envoy_version, sdk_servers):
    with SdkEnvoy(envoy_version, sdk_servers) as e:
        yield e


# ---------------------------------------------------------------------------
# Duplicate keys and escapes


@pytest.mark.parametrize("params_src", [
    '"name":"get_weather","name":"delete_everything","arguments":{}',
    '"name":"delete_everything","name":"get_weather","arguments":{}',
    '"name":"get_weather","arguments":{},"na\\u006de":"delete_everything"',
], ids=["safe-then-danger", "danger-then-safe", "escaped-key-spelling"])
def test_duplicate_name_in_params_is_refused(envoy, mcp_server, params_src):
    body = raw_modern('"tools/call"', params_src)
    status, headers, out = raw_post(envoy, body, token=ADMIN,
                                    headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                                             "Mcp-Name": "get_weather"})
    assert_refused(status, headers, out, 400, code=-32600)
    assert mcp_server.seen() == []


@pytest.mark.parametrize("order", [("tools/list", "tools/call"), ("tools/call", "tools/list")])
def test_duplicate_top_level_method_is_refused(envoy, mcp_server, order):
    first, second = order
    body = (f'{{"jsonrpc":"2.0","id":1,"method":"{first}","method":"{second}",'
            f'"params":{{"name":"delete_everything","arguments":{{}},"_meta":{META_JSON}}}}}')
    status, headers, out = raw_post(envoy, body, token=ADMIN, headers={"MCP-Protocol-Version": MODERN})
    assert_refused(status, headers, out, 400, code=-32600)
    assert mcp_server.seen() == []


ESCAPED_METHODS = ['"tools\\/call"', '"\\u0074ools/call"', '"\\u0074ools\\u002fcall"']


@pytest.mark.parametrize("method_src", ESCAPED_METHODS)
@pytest.mark.parametrize("name_src", ['"delete_everything"', '"del\\u0065te_everything"'])
def test_escaped_method_name_calling_forbidden_tool_is_refused(envoy, mcp_server, method_src, name_src):
    body = raw_modern(method_src, f'"name":{name_src},"arguments":{{}}', id_src='"esc"')
    status, headers, out = raw_post(envoy, body, token=ADMIN,
                                    headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                                             "Mcp-Name": "delete_everything"})
    assert_forbidden(status, headers, out, id="esc")
    assert mcp_server.seen() == []


@pytest.mark.parametrize("method_src", ESCAPED_METHODS)
def test_escaped_method_name_calling_allowed_tool_is_allowed(envoy, mcp_server, method_src):
    body = raw_modern(method_src, '"name":"get_weather","arguments":{"city":"Lyon"}', id_src="31")
    status, headers, out = raw_post(envoy, body,
                                    headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                                             "Mcp-Name": "get_weather"})
    assert status == 200, out
    assert result_text(headers, out) == "Weather in Lyon: sunny, 21 C", "the server read the same call"
    assert mcp_server.calls() == [("tools/call", "get_weather")]


# ---------------------------------------------------------------------------
# Content type, and a body where none belongs


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", None])
def test_post_not_declared_json_is_refused_415(envoy, mcp_server, content_type):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "delete_everything", "arguments": {}, "_meta": CLIENT_META}})
    status, headers, out = post(envoy, body, ADMIN, {"Accept": ACCEPT, "MCP-Protocol-Version": MODERN},
                                content_type=content_type)
    assert_refused(status, headers, out, 415)
    assert mcp_server.seen() == []


def test_json_content_type_with_parameters_is_accepted(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "get_weather", {"city": "Rome"},
                                      headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, body
    assert mcp_server.calls() == [("tools/call", "get_weather")]


def test_options_preflight_carrying_a_json_rpc_body_is_refused(envoy, mcp_server):
    """A CORS preflight passes without a token because browsers send it with
    no body and no credentials; an OPTIONS that carries a body is not one,
    whatever its headers say, and a body there is refused unread."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "delete_everything", "arguments": {}, "_meta": CLIENT_META}}
    h = modern_headers("tools/call", "delete_everything", token=None,
                       Origin="https://app.example", **{"Access-Control-Request-Method": "POST"})
    status, headers, out = envoy.request("OPTIONS", "/mcp", body, h)
    assert_refused(status, headers, out, 400, code=-32600)
    assert mcp_server.seen() == []


def test_options_preflight_without_body_still_passes(envoy, mcp_server):
    status, _, _ = envoy.request("OPTIONS", "/mcp", None, {
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert status == 405, "the SDK's own answer to OPTIONS"
    assert [r["http_method"] for r in mcp_server.seen()] == ["OPTIONS"]


# ---------------------------------------------------------------------------
# Malformed JSON, not JSON-RPC


@pytest.mark.parametrize("body", [
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything"',
    '{"jsonrpc":"2.0","id":1,"method":"tools/list"} trailing',
    "\xff\xfe",
    "",
], ids=["truncated", "trailing-data", "not-utf8", "empty"])
def test_malformed_json_is_refused_parse_error(envoy, mcp_server, body):
    status, headers, out = raw_post(envoy, body.encode("latin-1"), token=ADMIN)
    assert_refused(status, headers, out, 400, code=-32700)
    assert mcp_server.seen() == []


@pytest.mark.parametrize("body", [
    '{"hello":"world"}',
    "[]",
    "42",
    '"tools/call"',
    "[1, 2]",
    '{"jsonrpc":"1.0","id":1,"method":"tools/list"}',
    '{"jsonrpc":"2.0","id":1,"method":42}',
    '{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}',
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}',
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}',
    '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"docs://readme"}}',
    '{"jsonrpc":"2.0","id":1,"method":"tools/list","result":{}}',
], ids=["object", "empty-batch", "number", "string", "batch-of-numbers", "wrong-version", "method-number",
        "id-object", "call-without-name", "call-name-number", "read-without-uri", "request-with-result"])
def test_json_that_is_not_json_rpc_is_refused_invalid_request(envoy, mcp_server, body):
    status, headers, out = raw_post(envoy, body, token=ADMIN)
    assert_refused(status, headers, out, 400, code=-32600)
    assert mcp_server.seen() == []


# ---------------------------------------------------------------------------
# Size, and bodies in pieces


def test_body_over_max_body_bytes_is_refused_413(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "get_weather", {"city": "x" * MAX_BODY})
    assert_refused(status, headers, body, 413)
    assert mcp_server.seen() == []


def test_body_of_exactly_max_body_bytes_is_inspected_and_allowed(envoy, mcp_server):
    p = {"name": "get_weather", "arguments": {"city": ""}, "_meta": CLIENT_META}
    skeleton = len(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": p}))
    city = "y" * (MAX_BODY - skeleton)
    status, headers, body = tool_call(envoy, "get_weather", {"city": city})
    assert len(mcp_server.seen()[0]["body"]) == MAX_BODY
    assert status == 200, body
    assert result_text(headers, body) == f"Weather in {city}: sunny, 21 C"


def post_in_pieces(envoy, body, headers, piece=48, pause=0.01):
    """POSTs with chunked transfer encoding, a piece at a time, so the filter
    gets the body over several callbacks."""
    def pieces():
        for i in range(0, len(body), piece):
            time.sleep(pause)
            yield body[i:i + piece]
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    try:
        conn.request("POST", "/mcp", body=pieces(), headers=headers, encode_chunked=True)
        return read_response(conn)
    finally:
        conn.close()


def test_body_arriving_in_pieces_is_read_whole_before_deciding(envoy, mcp_server):
    forbidden = json.dumps({"jsonrpc": "2.0", "id": 81, "method": "tools/call",
                            "params": {"name": "delete_everything", "arguments": {}, "_meta": CLIENT_META}}).encode()
    status, headers, out = post_in_pieces(envoy, forbidden, modern_headers("tools/call", "delete_everything", ADMIN))
    assert_forbidden(status, headers, out, id=81)
    allowed = json.dumps({"jsonrpc": "2.0", "id": 82, "method": "tools/call",
                          "params": {"name": "get_weather", "arguments": {"city": "Turin"},
                                     "_meta": CLIENT_META}}).encode()
    status, headers, out = post_in_pieces(envoy, allowed, modern_headers("tools/call", "get_weather", READER))
    assert status == 200, out
    assert result_text(headers, out) == "Weather in Turin: sunny, 21 C"
    assert mcp_server.calls() == [("tools/call", "get_weather")]


def test_body_in_pieces_over_max_body_bytes_is_refused_413(envoy, mcp_server):
    big = json.dumps({"jsonrpc": "2.0", "id": 83, "method": "tools/call",
                      "params": {"name": "get_weather", "arguments": {"city": "z" * (2 * MAX_BODY)},
                                 "_meta": CLIENT_META}}).encode()
    status, headers, out = post_in_pieces(envoy, big, modern_headers("tools/call", "get_weather", READER),
                                          piece=1024, pause=0.005)
    assert_refused(status, headers, out, 413)
    assert mcp_server.seen() == []
