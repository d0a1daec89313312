"""The hold invariant on the answer side (README "List filtering"): no list
answer reaches the client unfiltered — whatever callbacks carry it (response
trailers), whatever stream carries it (a POST's answer, a GET stream live or
resumed with `Last-Event-ID`), whatever id the upstream echoes — and an
answer the filter cannot read (compressed, another media type, two
`Content-Type` headers) is replaced by a JSON-RPC error whose headers match
it. Real Envoy, both versions, in front of a scripted upstream (HTTP/1.1 or
HTTP/2, answering exactly as each test says) and of the official Python SDK
server with an event store."""

import gzip
import http.client
import json
import zlib

import pytest

from configs import ISSUER, RESOURCE, TOOL_RULES, base_config, inline_provider
from harness import Envoy
from mcp_client import initialize
from mcp_upstream import McpUpstream
from tokens import RsaKey, claims
from wire import Script, ScriptedUpstream, h2_request, sse_messages

KEY = RsaKey("answers-k1")
READER = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], scope="mcp:read", ttl=3600))
ADMIN = KEY.sign(claims(ISSUER, RESOURCE, roles=["admin"], scope="mcp:read mcp:write", ttl=3600))
TOOLS = ["get_weather", "search", "set_config", "delete_everything"]
# What a reader may call of TOOLS (TOOL_RULES).
READER_TOOLS = ["get_weather", "search"]


def config(**fields):
    return base_config([inline_provider(KEY)], TOOL_RULES, **{"max_body_bytes": 1 << 20, **fields})


def list_answer(id=1, tools=TOOLS, scope="public"):
    result = {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in tools]}
    if scope:
        result["cacheScope"] = scope
    return json.dumps({"jsonrpc": "2.0", "id": id, "result": result})


def sse(*payloads):
    return "".join(f"id: ev-{i}\nevent: message\ndata: {p}\n\n" for i, p in enumerate(payloads))


def json_script(body, **kw):
    return Script(headers=[("content-type", "application/json")], chunks=[body], **kw)


def sse_script(text, **kw):
    return Script(headers=[("content-type", "text/event-stream")], chunks=[text], **kw)


@pytest.fixture(scope="module", params=[False, True], ids=["h1-upstream", "h2-upstream"])
def stack(request, envoy_version):
    upstream = ScriptedUpstream(http2=request.param)
    try:
        with Envoy(envoy_version, config(), upstream.port, upstream_http2=request.param) as e:
            yield e, upstream
    finally:
        upstream.close()


@pytest.fixture(scope="module")
def h2_stack(envoy_version):
    upstream = ScriptedUpstream(http2=True)
    try:
        with Envoy(envoy_version, config(), upstream.port, upstream_http2=True) as e:
            yield e, upstream
    finally:
        upstream.close()


def list_request(token=READER, id=1):
    return [("content-type", "application/json"), ("accept", "application/json, text/event-stream"),
            ("authorization", f"Bearer {token}")], json.dumps({"jsonrpc": "2.0", "id": id, "method": "tools/list"})


def post_list(envoy, token=READER, id=1):
    headers, body = list_request(token, id)
    return h2_request(envoy.port, "POST", "/mcp", headers, body)


def get_stream(envoy, token=READER, extra=()):
    return h2_request(envoy.port, "GET", "/mcp",
                      [("accept", "text/event-stream"), ("authorization", f"Bearer {token}"), *extra])


def tool_names(message):
    return [t["name"] for t in message["result"]["tools"]]


def assert_unfilterable(reply, status=502):
    """The filter's error in place of an answer it could not read."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == ["application/json"]
    assert "content-encoding" not in reply.headers
    assert reply.headers.get("content-length", [str(len(reply.body))]) == [str(len(reply.body))]
    error = json.loads(reply.body)["error"]
    assert error["code"] == -32005
    assert b"delete_everything" not in reply.body


# --- trailers ---------------------------------------------------------------

@pytest.mark.parametrize("shape", ["json", "sse"])
def test_response_trailers_do_not_release_an_unfiltered_list(h2_stack, shape):
    envoy, upstream = h2_stack
    trailers = [("x-upstream-trailer", "done")]
    upstream.script = (json_script(list_answer(), trailers=trailers) if shape == "json"
                       else sse_script(sse(list_answer()), trailers=trailers))
    reply = post_list(envoy)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body) if shape == "json" else sse_messages(reply.body)[0]
    assert tool_names(message) == READER_TOOLS
    assert message["result"]["cacheScope"] == "private"
    if shape == "json":
        assert reply.headers["content-length"] == [str(len(reply.body))]


# --- streams ----------------------------------------------------------------

def test_list_answers_on_a_get_stream_are_filtered(stack):
    envoy, upstream = stack
    upstream.script = sse_script(sse(
        '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}', list_answer(id=7)))
    reply = get_stream(envoy)
    assert reply.status == 200, reply.body
    notification, answer = sse_messages(reply.body)
    assert notification["method"] == "notifications/tools/list_changed"
    assert tool_names(answer) == READER_TOOLS
    assert answer["result"]["cacheScope"] == "private"


def test_a_resumed_stream_replays_lists_filtered(envoy_version):
    """The SDK server with an event store: a POSTed tools/list answered on
    an event stream, then replayed by `GET` with `Last-Event-ID`."""
    with McpUpstream(json_response=False, stateless=False, event_store=True) as server:
        with Envoy(envoy_version, config(), server.port) as envoy:
            h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                 "Authorization": f"Bearer {READER}"}
            status, headers, _ = envoy.request("POST", "/mcp", initialize(), h)
            assert status == 200
            h["Mcp-Session-Id"] = headers["mcp-session-id"][0]
            h["MCP-Protocol-Version"] = "2025-11-25"
            status, _, _ = envoy.request("POST", "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"}, h)
            assert status == 202
            status, headers, body = envoy.request("POST", "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, h)
            assert status == 200, body
            ids = [line[3:].strip() for line in body.decode().splitlines() if line.startswith("id:")]
            [answer] = [m for m in sse_messages(body) if m.get("id") == 2]
            assert sorted(tool_names(answer)) == sorted(READER_TOOLS)
            assert len(ids) >= 2, body
            # Replay everything after the stream's first event: the list again.
            replay = read_stream_until(envoy.port, {**h, "Accept": "text/event-stream", "Last-Event-ID": ids[0]},
                                       lambda messages: any(m.get("id") == 2 for m in messages))
            [again] = [m for m in replay if m.get("id") == 2]
            assert sorted(tool_names(again)) == sorted(READER_TOOLS)
            assert "delete_everything" not in json.dumps(replay)
            assert [r["http_method"] for r in server.seen()][-1] == "GET"


def read_stream_until(port, headers, done, limit=1 << 20):
    """GETs an event stream and reads it until `done(messages)` holds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/mcp", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        data = b""
        while len(data) < limit:
            chunk = resp.read1(65536)
            if not chunk:
                break
            data += chunk
            complete = data.replace(b"\r\n", b"\n").rpartition(b"\n\n")[0]
            messages = sse_messages(complete)
            if done(messages):
                return messages
        raise AssertionError(f"the stream ended without the awaited message: {data[:500]!r}")
    finally:
        conn.close()


# --- what the filter cannot read -------------------------------------------------

COMPRESSED = {
    "gzip-sse": Script(headers=[("content-type", "text/event-stream"), ("content-encoding", "gzip")],
                       chunks=[gzip.compress(sse(list_answer()).encode())]),
    "deflate-json": Script(headers=[("content-type", "application/json"), ("content-encoding", "deflate")],
                           chunks=[zlib.compress(list_answer().encode())]),
    "gzip-json-404": Script(status=404, headers=[("content-type", "application/json"),
                                                 ("content-encoding", "gzip")],
                            chunks=[gzip.compress(list_answer().encode())]),
}


@pytest.mark.parametrize("case", list(COMPRESSED))
def test_compressed_list_answers_never_pass(stack, case):
    envoy, upstream = stack
    upstream.script = COMPRESSED[case]
    reply = post_list(envoy)
    assert_unfilterable(reply, status=404 if case.endswith("404") else 502)
    # The upstream was asked for plain bytes.
    assert not any(k == "accept-encoding" for k, _ in upstream.requests[-1]["headers"])


OTHER_MEDIA = {
    "no-content-type": [],
    "text-plain": [("content-type", "text/plain")],
    "json-rpc": [("content-type", "application/json-rpc")],
    "two-content-types": [("content-type", "application/json"), ("content-type", "text/plain")],
}


@pytest.mark.parametrize("case", list(OTHER_MEDIA))
def test_list_answers_under_other_media_types_never_pass(stack, case):
    envoy, upstream = stack
    upstream.script = Script(headers=OTHER_MEDIA[case], chunks=[list_answer()])
    assert_unfilterable(post_list(envoy))
    upstream.script = Script(headers=OTHER_MEDIA[case], chunks=[sse(list_answer())])
    assert_unfilterable(get_stream(envoy))


def test_an_upstream_error_status_is_kept_when_its_answer_is_replaced(stack):
    envoy, upstream = stack
    upstream.script = Script(status=503, headers=[("content-type", "text/plain")], chunks=["unavailable"])
    assert_unfilterable(post_list(envoy), status=503)


def test_unfilterable_answers_are_counted(stack):
    envoy, upstream = stack
    before = envoy.stats().get("wasmcustom.mcp_authz.list_unfilterable", 0)
    upstream.script = Script(headers=[("content-type", "text/plain")], chunks=[list_answer()])
    post_list(envoy)
    assert envoy.stats()["wasmcustom.mcp_authz.list_unfilterable"] == before + 1
    assert "answer not passed" in envoy.logs()


# --- ids and cache scope -------------------------------------------------------

@pytest.mark.parametrize("shape", ["json", "sse"])
@pytest.mark.parametrize("echoed", ['"1"', "1.0", "99"])
def test_list_answers_are_filtered_whatever_id_comes_back(stack, shape, echoed):
    envoy, upstream = stack
    answer = list_answer(id=json.loads(echoed))
    upstream.script = json_script(answer) if shape == "json" else sse_script(sse(answer))
    reply = post_list(envoy, id=1)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body) if shape == "json" else sse_messages(reply.body)[0]
    assert tool_names(message) == READER_TOOLS


def test_a_list_nothing_was_cut_from_is_still_private(stack):
    envoy, upstream = stack
    upstream.script = json_script(list_answer(tools=["get_weather", "set_config"]))
    reply = post_list(envoy, token=ADMIN)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body)
    assert tool_names(message) == ["get_weather", "set_config"]
    assert message["result"]["cacheScope"] == "private"


def test_a_batch_of_9000_list_answers_is_filtered(envoy_version):
    upstream = ScriptedUpstream(http2=False)
    try:
        with Envoy(envoy_version, config(), upstream.port) as envoy:
            n = 9000
            batch = [{"jsonrpc": "2.0", "id": i, "method": "tools/list"} for i in range(n)]
            answers = [{"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "get_weather"},
                                                                       {"name": "delete_everything"}]}}
                       for i in range(n)]
            upstream.script = json_script(json.dumps(answers))
            status, _, body = envoy.request("POST", "/mcp", batch, {
                "Content-Type": "application/json", "Authorization": f"Bearer {READER}"}, timeout=60)
            assert status == 200, body[:300]
            out = json.loads(body)
            assert len(out) == n
            assert all(tool_names(m) == ["get_weather"] for m in out)
    finally:
        upstream.close()


# --- answers that need no filtering -------------------------------------------------

def test_the_answer_to_a_call_passes_byte_for_byte(stack):
    """A POST that asked for no list: its answer is not read, whatever it is."""
    envoy, upstream = stack
    raw = gzip.compress(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"delete_everything"}]}}')
    upstream.script = Script(headers=[("content-type", "application/json"), ("content-encoding", "gzip")],
                             chunks=[raw])
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "get_weather", "arguments": {}}})
    reply = h2_request(envoy.port, "POST", "/mcp", [("content-type", "application/json"),
                                                    ("authorization", f"Bearer {READER}")], call)
    assert reply.status == 200
    assert reply.headers["content-encoding"] == ["gzip"]
    assert reply.body == raw


# --- shapes an outsider found -------------------------------------------------

def test_an_upstream_header_that_is_not_utf8_crashes_nothing(stack):
    envoy, upstream = stack
    upstream.script = Script(headers=[("content-type", "application/json"), ("x-up", b"\xff\xfe")],
                             chunks=[list_answer()])
    for _ in range(2):
        reply = post_list(envoy)
        assert reply.status == 200, reply.body
        assert tool_names(json.loads(reply.body)) == READER_TOOLS
    assert "panicked" not in envoy.logs()


def test_the_upstreams_trailers_do_not_go_with_an_error(h2_stack):
    envoy, upstream = h2_stack
    upstream.script = Script(headers=[("content-type", "text/plain")], chunks=[list_answer()],
                             trailers=[("x-upstream-trailer", "secret")])
    reply = post_list(envoy)
    assert_unfilterable(reply)
    assert "x-upstream-trailer" not in reply.trailers


def test_a_limit_above_envoys_buffer_works_once_the_buffers_are_raised(envoy_version):
    """`max_body_bytes` beyond Envoy's per-connection buffer limit (1 MiB by
    default) needs that limit raised on the listener and the cluster, as the
    README says; then bodies and answers up to the limit are read whole."""
    upstream = ScriptedUpstream(http2=False)
    try:
        with Envoy(envoy_version, config(max_body_bytes=8 << 20), upstream.port,
                   buffer_limit=16 << 20) as envoy:
            big = [{"name": f"get_{i}", "description": "x" * 200} for i in range(12000)]
            answer = {"jsonrpc": "2.0", "id": 1, "result": {"tools": big + [{"name": "delete_everything"}]}}
            upstream.script = json_script(json.dumps(answer))
            status, _, body = envoy.request("POST", "/mcp", json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                 "params": {"_meta": {"pad": "y" * (2 << 20)}}}),
                {"Content-Type": "application/json", "Authorization": f"Bearer {READER}"}, timeout=60)
            assert status == 200, body[:300]
            assert len(upstream.requests[-1]["body"]) > 2 << 20
            names = tool_names(json.loads(body))
            assert len(names) == 12000 and "delete_everything" not in names
    finally:
        upstream.close()
