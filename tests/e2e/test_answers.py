"""The hold invariant on the answer side (README "List filtering"): no list
answer reaches the client unfiltered — whatever callbacks carry it (response
trailers), whatever stream carries it (a POST's answer, a GET stream live or
resumed with `Last-Event-ID`), whatever id the upstream echoes — and an
answer the filter cannot read (compressed in any coding, another media
type, two `Content-Type` headers) is replaced by a JSON-RPC error whose
headers match it. Real Envoy, both versions; every case over each client
transport (`wire.TRANSPORTS`: HTTP/1.1 with Envoy's default codec, HTTP/1.1
with `enable_trailers`, HTTP/2), in front of a scripted upstream (HTTP/1.1,
HTTP/1.1 with trailers, or HTTP/2, answering exactly as each test says) and
of the official Python SDK server with an event store."""

import base64
import gzip
import http.client
import json
import zlib

import pytest

from configs import ISSUER, RESOURCE, TOOL_RULES, base_config, inline_provider
from harness import Envoy, poll
from mcp_client import initialize
from mcp_upstream import McpUpstream
from tokens import RsaKey, claims
from wire import TRANSPORTS, Script, ScriptedUpstream, h2_read_until, send, sse_messages

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


# How the Envoy of a stack reaches its scripted upstream: HTTP/1.1 (which
# drops the upstream's trailers), HTTP/1.1 with `enable_trailers` on the
# cluster, HTTP/2.
UPSTREAMS = {"h1-upstream": {}, "h1-trailers-upstream": {"upstream_http1_trailers": True},
             "h2-upstream": {"upstream_http2": True}}


def scripted_stack(envoy_version, upstream_kind):
    upstream = ScriptedUpstream(http2=upstream_kind == "h2-upstream")
    envoy = Envoy(envoy_version, config(), upstream.port, trailers_listener=True, **UPSTREAMS[upstream_kind])
    return envoy, upstream


@pytest.fixture(scope="module", params=["h1-upstream", "h2-upstream"])
def stack(request, envoy_version):
    envoy, upstream = scripted_stack(envoy_version, request.param)
    try:
        with envoy:
            yield envoy, upstream
    finally:
        upstream.close()


@pytest.fixture(scope="module", params=list(UPSTREAMS))
def trailer_stack(request, envoy_version):
    """Upstreams that send trailers: over HTTP/2, over HTTP/1.1 with
    `enable_trailers` on the cluster, and over plain HTTP/1.1, whose codec
    in Envoy drops them before any filter sees them."""
    envoy, upstream = scripted_stack(envoy_version, request.param)
    try:
        with envoy:
            yield envoy, upstream, request.param
    finally:
        upstream.close()


def list_request(token=READER, id=1):
    return [("content-type", "application/json"), ("accept", "application/json, text/event-stream"),
            ("authorization", f"Bearer {token}")], json.dumps({"jsonrpc": "2.0", "id": id, "method": "tools/list"})


def post_list(envoy, transport, token=READER, id=1, extra=()):
    headers, body = list_request(token, id)
    return send(transport, envoy, "POST", "/mcp", [*headers, *extra], body)


def get_stream(envoy, transport, token=READER, extra=()):
    return send(transport, envoy, "GET", "/mcp",
                [("accept", "text/event-stream"), ("authorization", f"Bearer {token}"), *extra])


def tool_names(message):
    return [t["name"] for t in message["result"]["tools"]]


def assert_length_matches(reply):
    assert reply.headers.get("content-length", [str(len(reply.body))]) == [str(len(reply.body))]


def assert_unfilterable(reply, status=502):
    """The filter's error in place of an answer it could not read."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == ["application/json"]
    assert "content-encoding" not in reply.headers
    assert_length_matches(reply)
    error = json.loads(reply.body)["error"]
    assert error["code"] == -32005
    assert b"delete_everything" not in reply.body


# --- case 2: trailers ------------------------------------------------------------

def trailers_reach_the_client(transport, upstream_kind, shape):
    """Whether the upstream's trailers get to the client, which is Envoy's
    doing, not the filter's: the upstream's HTTP/1.1 codec drops them unless
    `enable_trailers` is set on the cluster; towards the client HTTP/2
    carries them, HTTP/1.1 only with `enable_trailers` and only on a chunked
    answer — not the JSON one, to which the filter gives a `Content-Length`."""
    if upstream_kind == "h1-upstream":
        return False
    return transport == "h2" or (transport == "h1-trailers" and shape == "sse")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", ["json", "sse"])
def test_response_trailers_do_not_release_an_unfiltered_list(trailer_stack, transport, shape):
    """Trailers end the answer and the filter reads it then. From a plain
    HTTP/1.1 upstream there are none (Envoy drops them): the list is
    filtered all the same."""
    envoy, upstream, upstream_kind = trailer_stack
    trailers = [("x-upstream-trailer", "done")]
    upstream.script = (json_script(list_answer(), trailers=trailers) if shape == "json"
                       else sse_script(sse(list_answer()), trailers=trailers))
    reply = post_list(envoy, transport)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body) if shape == "json" else sse_messages(reply.body)[0]
    assert tool_names(message) == READER_TOOLS
    assert message["result"]["cacheScope"] == "private"
    assert_length_matches(reply)
    if shape == "json":
        assert reply.headers["content-length"] == [str(len(reply.body))]
    got = reply.trailers.get("x-upstream-trailer")
    assert got == (["done"] if trailers_reach_the_client(transport, upstream_kind, shape) else None)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_upstreams_trailers_do_not_go_with_an_error(trailer_stack, transport):
    envoy, upstream, _ = trailer_stack
    upstream.script = Script(headers=[("content-type", "text/plain")], chunks=[list_answer()],
                             trailers=[("x-upstream-trailer", "secret")])
    reply = post_list(envoy, transport)
    assert_unfilterable(reply)
    assert "x-upstream-trailer" not in reply.trailers


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("media", ["application/json", "text/plain"])
def test_an_answer_of_headers_and_trailers_alone_is_never_a_half_error(trailer_stack, transport, media):
    """An answer the filter could not read (`gzip`, `text/plain`) with no
    body at all: an HTTP/2 upstream's headers followed by trailers alone, an
    HTTP/1.1 one's empty chunked body and trailers. There is nothing to
    filter, and Envoy has no body to put an error in: it passes as it is,
    with headers that match its empty body (not the error's headers over
    nothing). From a plain HTTP/1.1 upstream, whose trailers Envoy drops,
    the filter sees an empty body end the answer instead, and the error
    replaces it, whole."""
    envoy, upstream, upstream_kind = trailer_stack
    upstream.script = Script(headers=[("content-type", media), ("content-encoding", "gzip")], chunks=[],
                             trailers=[("x-upstream-trailer", "done")])
    reply = post_list(envoy, transport)
    if upstream_kind == "h1-upstream":
        assert_unfilterable(reply)
        return
    assert reply.status == 200, (reply.headers, reply.body)
    assert reply.body == b""
    assert reply.headers["content-type"] == [media]
    assert_length_matches(reply)


# --- case 3: streams ----------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_list_answers_on_a_get_stream_are_filtered(stack, transport):
    envoy, upstream = stack
    upstream.script = sse_script(sse(
        '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}', list_answer(id=7)))
    reply = get_stream(envoy, transport)
    assert reply.status == 200, reply.body
    notification, answer = sse_messages(reply.body)
    assert notification["method"] == "notifications/tools/list_changed"
    assert tool_names(answer) == READER_TOOLS
    assert answer["result"]["cacheScope"] == "private"


@pytest.fixture(scope="module")
def resumable(envoy_version):
    """The SDK server with an event store, behind Envoy with both listeners."""
    with McpUpstream(json_response=False, stateless=False, event_store=True) as server:
        with Envoy(envoy_version, config(), server.port, trailers_listener=True) as envoy:
            yield envoy, server


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_resumed_stream_replays_lists_filtered(resumable, transport):
    """A POSTed tools/list answered on an event stream, then replayed by
    `GET` with `Last-Event-ID`; the session's every request goes over
    `transport`."""
    envoy, server = resumable
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
         "authorization": f"Bearer {READER}"}
    reply = send(transport, envoy, "POST", "/mcp", h, initialize())
    assert reply.status == 200, reply.body
    h["mcp-session-id"] = reply.headers["mcp-session-id"][0]
    h["mcp-protocol-version"] = "2025-11-25"
    reply = send(transport, envoy, "POST", "/mcp", h, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert reply.status == 202
    reply = send(transport, envoy, "POST", "/mcp", h, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert reply.status == 200, reply.body
    ids = [line[3:].strip() for line in reply.body.decode().splitlines() if line.startswith("id:")]
    [answer] = [m for m in sse_messages(reply.body) if m.get("id") == 2]
    assert sorted(tool_names(answer)) == sorted(READER_TOOLS)
    assert len(ids) >= 2, reply.body
    # Replay everything after the stream's first event: the list again.
    replay = read_stream_until(envoy, transport, {**h, "accept": "text/event-stream", "last-event-id": ids[0]},
                               lambda messages: any(m.get("id") == 2 for m in messages))
    [again] = [m for m in replay if m.get("id") == 2]
    assert sorted(tool_names(again)) == sorted(READER_TOOLS)
    assert "delete_everything" not in json.dumps(replay)
    assert [r["http_method"] for r in server.seen()][-1] == "GET"


def complete_messages(data):
    """The messages of the complete events in `data` (a stream read so far)."""
    return sse_messages(data.replace(b"\r\n", b"\n").rpartition(b"\n\n")[0])


def read_stream_until(envoy, transport, headers, done, limit=1 << 20):
    """GETs an event stream over `transport` and reads it until
    `done(messages)` holds (the stream stays open)."""
    if transport == "h2":
        reply = h2_read_until(envoy.port, "GET", "/mcp", list(headers.items()),
                              lambda data: done(complete_messages(data)))
        assert reply.status == 200, reply.body
        return complete_messages(reply.body)
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port_for(transport), timeout=10)
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
            messages = complete_messages(data)
            if done(messages):
                return messages
        raise AssertionError(f"the stream ended without the awaited message: {data[:500]!r}")
    finally:
        conn.close()


# --- case 4: what the filter cannot read: compressed ------------------------------

# Real brotli (Python `brotli` 1.2) and zstd (`zstd -19`) bytes of
# `list_answer()` and `sse(list_answer())` as they stand here; the filter
# reads no compressed byte, so what they hold only matters to a reader.
BROTLI_JSON = base64.b64decode(
    "GzkBwBwHbqw1F0lwgygvEeS21G+dAakSDR/QOZPMUdw3S1+XzgCBmN0CxrYDqqhl4e8Fvz3hI7w72DeuErJZuqrfb03TS8VzWgO8LBXT"
    "yCPJyXZfO8QaUnyPAu//ArGIR2HS+TQpdlg0Gzh3xdDn/D6m15hvgg2mAg==")
BROTLI_SSE = base64.b64decode(
    "G1kBgIzUYq0wbAbR5vZfxptfscZf1saIH1TCKQkJQgwQCNvdgHHX07BKuqhxQHG7CEPIzfk51/EhRujd3orVLyQhNANM4GmTrft9e8bY"
    "Y0JpBduUZkZVukyjnxM5mou7DhfjKFL4XQpG+XsZRj2spVxeFk2rw0cYe5js5aacd/BLWYpx5AfCYcki")
ZSTD_JSON = base64.b64decode(
    "KLUv/WQ6AG0EAMLIGxlwrQ6AoCGpbuEv6NKSc0hAtSWOWOTVfwgB0/R9EHGmXILdtr1aRnyuI8oPH9wMOVmeEuUe7ZY2rmpN03uZQeSM"
    "WsNuiXZmpOy6MXQ0L9y0eKlQ7BVK2ZcUe0OnMr1agmJP3tV6AAxX7DtplJW5FAkgEKbsA44hWTxLP+LQp3zoVYHroPz8RetAAVlz/+Y=")
ZSTD_SSE = base64.b64decode(
    "KLUv/WRaAA0FAIJKIBlwbw5QxVdUmeyZLV0u31Y1UKA0Btn/3cMBAJBlyxBaKEny8ceOV4MkwtfX9OrK+9AZBzZRstKPJ/epQZZt859F"
    "SpeL/vhoSorTX7tbSt955OJiiLadkJS9DVHz02pQaFsGrgZLDMZqW5amKOezmDbXjgHuuDkfaev46gAhVNfGwAogEIbwA44hWTxLL+LQ"
    "p3zoFYHroHxeZFVIlogCO3DleA==")


def compressed(media, codings, body):
    media_type = "application/json" if media == "json" else "text/event-stream"
    return Script(headers=[("content-type", media_type)] + [("content-encoding", c) for c in codings],
                  chunks=[body])


def deflate(text):
    return zlib.compress(text.encode())


COMPRESSED = {
    "gzip-sse": compressed("sse", ["gzip"], gzip.compress(sse(list_answer()).encode())),
    "deflate-sse": compressed("sse", ["deflate"], deflate(sse(list_answer()))),
    "br-sse": compressed("sse", ["br"], BROTLI_SSE),
    "zstd-sse": compressed("sse", ["zstd"], ZSTD_SSE),
    "identity-then-gzip-sse": compressed("sse", ["identity, gzip"], gzip.compress(sse(list_answer()).encode())),
    "upper-case-gzip-sse": compressed("sse", ["GZIP"], gzip.compress(sse(list_answer()).encode())),
    "two-headers-sse": compressed("sse", ["identity", "deflate"], deflate(sse(list_answer()))),
    "gzip-json": compressed("json", ["gzip"], gzip.compress(list_answer().encode())),
    "deflate-json": compressed("json", ["deflate"], deflate(list_answer())),
    "br-json": compressed("json", ["br"], BROTLI_JSON),
    "zstd-json": compressed("json", ["zstd"], ZSTD_JSON),
    "x-gzip-json": compressed("json", ["x-gzip"], gzip.compress(list_answer().encode())),
    "gzip-then-identity-json": compressed("json", ["gzip, identity"], gzip.compress(list_answer().encode())),
    "gzip-json-404": Script(status=404, headers=[("content-type", "application/json"),
                                                 ("content-encoding", "gzip")],
                            chunks=[gzip.compress(list_answer().encode())]),
}


COMPRESSED_LOG = "answer not passed: list answer is compressed"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(COMPRESSED))
def test_compressed_list_answers_never_pass(stack, transport, case):
    """Refused for its `Content-Encoding`, before any byte is read (the
    log says so: compressed JSON would also fail to parse, but a stream's
    bytes are read as they pass)."""
    envoy, upstream = stack
    upstream.script = COMPRESSED[case]
    logged = envoy.logs().count(COMPRESSED_LOG)
    # The client asks for compression; the upstream compresses anyway.
    reply = post_list(envoy, transport, extra=[("accept-encoding", "gzip, br")])
    assert_unfilterable(reply, status=404 if case.endswith("404") else 502)
    assert poll(lambda: envoy.logs().count(COMPRESSED_LOG) == logged + 1, 5)
    # The upstream was asked for plain bytes.
    assert not any(k.lower() == "accept-encoding" for k, _ in upstream.requests[-1]["headers"])


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", ["json", "sse"])
def test_identity_encoding_is_read_and_filtered(stack, transport, shape):
    """`identity` is no compression: the answer is read and filtered."""
    envoy, upstream = stack
    upstream.script = compressed(shape, ["identity"], list_answer() if shape == "json" else sse(list_answer()))
    reply = post_list(envoy, transport)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body) if shape == "json" else sse_messages(reply.body)[0]
    assert tool_names(message) == READER_TOOLS


# --- case 5: what the filter cannot read: other media types ------------------------

OTHER_MEDIA = {
    "no-content-type": [],
    "text-plain": [("content-type", "text/plain")],
    "json-rpc": [("content-type", "application/json-rpc")],
    "two-content-types": [("content-type", "application/json"), ("content-type", "text/plain")],
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(OTHER_MEDIA))
def test_list_answers_under_other_media_types_never_pass(stack, transport, case):
    envoy, upstream = stack
    upstream.script = Script(headers=OTHER_MEDIA[case], chunks=[list_answer()])
    assert_unfilterable(post_list(envoy, transport))
    upstream.script = Script(headers=OTHER_MEDIA[case], chunks=[sse(list_answer())])
    assert_unfilterable(get_stream(envoy, transport))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_upstream_error_status_is_kept_when_its_answer_is_replaced(stack, transport):
    envoy, upstream = stack
    upstream.script = Script(status=503, headers=[("content-type", "text/plain")], chunks=["unavailable"])
    assert_unfilterable(post_list(envoy, transport), status=503)


def test_unfilterable_answers_are_counted(stack):
    envoy, upstream = stack
    before = envoy.stats().get("wasmcustom.mcp_authz.list_unfilterable", 0)
    upstream.script = Script(headers=[("content-type", "text/plain")], chunks=[list_answer()])
    post_list(envoy, "h1")
    assert envoy.stats()["wasmcustom.mcp_authz.list_unfilterable"] == before + 1
    assert "answer not passed" in envoy.logs()


# --- cases 6 and 7: ids and cache scope ----------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", ["json", "sse"])
@pytest.mark.parametrize("echoed", ['"1"', "1.0", "99"])
def test_list_answers_are_filtered_whatever_id_comes_back(stack, transport, shape, echoed):
    envoy, upstream = stack
    answer = list_answer(id=json.loads(echoed))
    upstream.script = json_script(answer) if shape == "json" else sse_script(sse(answer))
    reply = post_list(envoy, transport, id=1)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body) if shape == "json" else sse_messages(reply.body)[0]
    assert tool_names(message) == READER_TOOLS


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", ["json", "sse"])
@pytest.mark.parametrize("echoed", ['"1"', "1.0"])
def test_an_echoed_id_still_names_the_list_request(stack, transport, shape, echoed):
    """Shape alone finds a `tools` array under any id; the request's id,
    compared as a value, also finds the list answer whose `tools` is no
    array (refused: a client may read it as items all the same) and gives
    `cacheScope: "private"` to one that carries no items at all."""
    envoy, upstream = stack
    id = json.loads(echoed)
    odd = json.dumps({"jsonrpc": "2.0", "id": id, "result": {"tools": {"0": {"name": "delete_everything"}}}})
    upstream.script = json_script(odd) if shape == "json" else sse_script(sse(odd))
    reply = post_list(envoy, transport)
    if shape == "json":
        assert_unfilterable(reply)
    else:
        assert reply.status == 200, reply.body
        assert [m["error"]["code"] for m in sse_messages(reply.body)] == [-32005]
        assert b"delete_everything" not in reply.body
    empty = json.dumps({"jsonrpc": "2.0", "id": id, "result": {"cacheScope": "public", "nextCursor": "c2"}})
    upstream.script = json_script(empty) if shape == "json" else sse_script(sse(empty))
    reply = post_list(envoy, transport)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body) if shape == "json" else sse_messages(reply.body)[0]
    assert message["result"] == {"cacheScope": "private", "nextCursor": "c2"}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", ["json", "sse"])
def test_a_list_nothing_was_cut_from_is_still_private(stack, transport, shape):
    envoy, upstream = stack
    answer = list_answer(tools=["get_weather", "set_config"])
    upstream.script = json_script(answer) if shape == "json" else sse_script(sse(answer))
    reply = post_list(envoy, transport, token=ADMIN)
    assert reply.status == 200, reply.body
    message = json.loads(reply.body) if shape == "json" else sse_messages(reply.body)[0]
    assert tool_names(message) == ["get_weather", "set_config"]
    assert message["result"]["cacheScope"] == "private"


# --- case 11: a batch of 9,000 -----------------------------------------------------------

@pytest.fixture(scope="module")
def batch_stack(envoy_version):
    envoy, upstream = scripted_stack(envoy_version, "h1-upstream")
    try:
        with envoy:
            yield envoy, upstream
    finally:
        upstream.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_batch_of_9000_list_answers_is_filtered(batch_stack, transport):
    """The result only; that finding the answers' ids stays linear is
    counted natively (`lists::tests`), not timed here."""
    envoy, upstream = batch_stack
    n = 9000
    batch = [{"jsonrpc": "2.0", "id": i, "method": "tools/list"} for i in range(n)]
    answers = [{"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "get_weather"},
                                                               {"name": "delete_everything"}]}}
               for i in range(n)]
    upstream.script = json_script(json.dumps(answers))
    reply = send(transport, envoy, "POST", "/mcp", {
        "content-type": "application/json", "authorization": f"Bearer {READER}"}, batch, timeout=60)
    assert reply.status == 200, reply.body[:300]
    out = json.loads(reply.body)
    assert len(out) == n
    assert all(tool_names(m) == ["get_weather"] for m in out)
    assert json.loads(upstream.requests[-1]["body"]) == batch


# --- answers that need no filtering -------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_answer_to_a_call_passes_byte_for_byte(stack, transport):
    """A POST that asked for no list: its answer is not read, whatever it is."""
    envoy, upstream = stack
    raw = gzip.compress(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"delete_everything"}]}}')
    upstream.script = Script(headers=[("content-type", "application/json"), ("content-encoding", "gzip")],
                             chunks=[raw])
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "get_weather", "arguments": {}}})
    reply = send(transport, envoy, "POST", "/mcp", [("content-type", "application/json"),
                                                    ("authorization", f"Bearer {READER}")], call)
    assert reply.status == 200
    assert reply.headers["content-encoding"] == ["gzip"]
    assert reply.body == raw


# --- shapes an outsider found -------------------------------------------------

def test_an_upstream_header_that_is_not_utf8_crashes_nothing(stack):
    envoy, upstream = stack
    upstream.script = Script(headers=[("content-type", "application/json"), ("x-up", b"\xff\xfe")],
                             chunks=[list_answer()])
    for transport in TRANSPORTS:
        reply = post_list(envoy, transport)
        assert reply.status == 200, reply.body
        assert tool_names(json.loads(reply.body)) == READER_TOOLS
    assert "panicked" not in envoy.logs()


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
