"""The hold invariant on the request side (README "Request handling"):
from the moment the filter holds a request until its verdict, no callback of
the stream lets anything reach the upstream — request trailers included —
and a request is inspected whatever its method's spelling (steps 1 and 3:
the metadata paths, the methods the MCP endpoint takes, a body where none
belongs); `Accept-Encoding` is not passed on (step 6). Real Envoy, both
versions, every case over each client transport (`wire.TRANSPORTS`:
HTTP/1.1 with Envoy's default codec, which drops request trailers before
any filter sees them, HTTP/1.1 with `enable_trailers`, HTTP/2); the official
Python SDK's MCP server records everything that reaches it, so "refused"
means the client got the filter's answer and the server saw nothing."""

import json

import pytest

import harness
from configs import ISSUER, RESOURCE, SCOPES, TOOL_RULES, base_config, inline_provider
from harness import Envoy
from jwks_server import JwksServer
from mcp_client import call, client_headers, raw_post, rpc
from mcp_upstream import McpUpstream
from tokens import RsaKey, claims, jwks
from wire import TRANSPORTS, Script, ScriptedUpstream, h2_request, send

KEY = RsaKey("hold-k1")
REMOTE_ISSUER = "https://login.example.org"
REMOTE_KEY = RsaKey("remote-k1")
STRANGER = RsaKey("never-published")


def config(remote_port=None):
    providers = [inline_provider(KEY)]
    if remote_port:
        providers.append({"issuer": REMOTE_ISSUER,
                          "jwks": {"remote": {"cluster": "idp", "url": f"http://127.0.0.1:{remote_port}/certs",
                                              "timeout_ms": 3000}},
                          "roles_claims": ["realm_access.roles"]})
    return base_config(providers, TOOL_RULES, scopes_supported=SCOPES,
                       identity_headers={"x-mcp-subject": "sub", "x-mcp-roles": "$roles"},
                       public_paths=["/healthz"])


def mint(roles, scope="mcp:read", key=KEY, issuer=ISSUER, headers=None, **extra):
    token_claims = claims(issuer, RESOURCE, sub="alice", roles=roles, scope=scope, ttl=3600, **extra)
    return key.sign(token_claims, headers=headers)


READER = mint(["reader"])
ADMIN = mint(["admin"], "mcp:read mcp:write")
HEADERS = client_headers(READER)

# A call every rule refuses, and one a reader may make.
DELETE = call("delete_everything", arguments={})
WEATHER = call("get_weather", arguments={})


@pytest.fixture(scope="module")
def mcp_server():
    with McpUpstream(json_response=True, stateless=True) as server:
        yield server


@pytest.fixture(scope="module")
def envoy(envoy_version, mcp_server):
    """A listener with the default HTTP/1.1 codec, which drops request
    trailers, and one with `enable_trailers` (HTTP/2 always has them)."""
    with Envoy(envoy_version, config(), mcp_server.port, trailers_listener=True) as e:
        yield e


@pytest.fixture(autouse=True)
def fresh_record(mcp_server):
    mcp_server.clear()


TRAILERS = [("x-foo", "bar")]


def error_code(body):
    return json.loads(body)["error"]["code"]


# --- case 1: request trailers ------------------------------------------------
# Over HTTP/1.1 without `enable_trailers` Envoy's codec drops the trailers
# before any filter sees them: the request is decided on its body alone,
# as it must be.

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trailers_do_not_release_a_denied_call(envoy, mcp_server, transport):
    reply = send(transport, envoy, "POST", "/mcp", HEADERS, DELETE, TRAILERS)
    assert reply.status == 403, reply.body
    assert error_code(reply.body) == -32003
    assert mcp_server.seen() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trailers_do_not_release_a_request_without_a_token(envoy, mcp_server, transport):
    reply = send(transport, envoy, "POST", "/mcp", client_headers(None), WEATHER, TRAILERS)
    assert reply.status == 401, reply.body
    assert mcp_server.seen() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_allowed_call_with_trailers_goes_on_with_the_filters_headers(envoy, mcp_server, transport):
    hdrs = HEADERS + [("x-mcp-subject", "root"), ("x-mcp-roles", "admin")]
    reply = send(transport, envoy, "POST", "/mcp", hdrs, WEATHER, TRAILERS)
    assert reply.status == 200, reply.body
    [seen] = mcp_server.seen()
    assert seen["rpc"][0]["name"] == "get_weather"
    assert seen["authorization"] is False
    assert seen["headers"]["x-mcp-subject"] == ["alice"]
    assert seen["headers"]["x-mcp-roles"] == ["reader"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trailers_do_not_release_a_request_waiting_for_keys(envoy_version, mcp_server, transport):
    """A token naming a `kid` the issuer never published: the filter
    refetches the keys (slowly, here) and the trailers arrive during that
    wait. Nothing reaches the server, and the answer is 401."""
    with JwksServer(jwks(REMOTE_KEY)) as server:
        with Envoy(envoy_version, config(server.port), mcp_server.port,
                   clusters=[harness.cluster("idp", server.port)], trailers_listener=True) as e:
            good = mint(["reader"], key=REMOTE_KEY, issuer=REMOTE_ISSUER)
            reply = send(transport, e, "POST", "/mcp", client_headers(good), rpc("tools/list"), TRAILERS)
            assert reply.status == 200, reply.body
            fetches = server.count("/certs")
            mcp_server.clear()
            server.set(delay=1.0)
            forged = mint(["admin"], "mcp:read mcp:write", key=STRANGER, issuer=REMOTE_ISSUER)
            reply = send(transport, e, "POST", "/mcp", client_headers(forged), DELETE, TRAILERS)
            assert reply.status == 401, reply.body
            assert server.count("/certs") == fetches + 1, "the filter refetched the keys"
            assert mcp_server.seen() == []


# --- case 8: methods ------------------------------------------------------------

def refused_by_envoys_codec(transport, method):
    """Envoy's HTTP/1.1 codec takes only the methods it knows, in upper case
    (methods are case-sensitive there): any other spelling is answered 400
    by Envoy itself, before any filter. Over HTTP/2 every spelling reaches
    the filter."""
    return transport != "h2" and method != method.upper()


def assert_refused_by_envoys_codec(reply, mcp_server):
    assert (reply.status, reply.body) == (400, b"Bad Request")
    assert mcp_server.seen() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("method", ["post", "Post", "pOST"])
def test_a_post_in_any_spelling_is_inspected(envoy, mcp_server, transport, method):
    """The body is read and the call refused, whatever the method's case;
    over HTTP/1.1 such a method never gets past Envoy's codec."""
    reply = send(transport, envoy, method, "/mcp", HEADERS, DELETE)
    if refused_by_envoys_codec(transport, method):
        assert_refused_by_envoys_codec(reply, mcp_server)
        return
    assert reply.status == 403, reply.body
    assert error_code(reply.body) == -32003
    assert mcp_server.seen() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("method", ["PUT", "PATCH", "HEAD", "TRACE", "put"])
def test_methods_the_mcp_transport_does_not_use_are_refused(envoy, mcp_server, transport, method):
    reply = send(transport, envoy, method, "/mcp", HEADERS, WEATHER)
    if refused_by_envoys_codec(transport, method):
        assert_refused_by_envoys_codec(reply, mcp_server)
        return
    assert reply.status == 405
    assert reply.headers["allow"] == ["POST, GET, DELETE, OPTIONS"]
    assert mcp_server.seen() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("method", ["GET", "DELETE", "get", "OPTIONS"])
def test_a_body_where_none_belongs_is_refused(envoy, mcp_server, transport, method):
    reply = send(transport, envoy, method, "/mcp", HEADERS, DELETE)
    if refused_by_envoys_codec(transport, method):
        assert_refused_by_envoys_codec(reply, mcp_server)
        return
    assert reply.status == 400, reply.body
    assert error_code(reply.body) == -32600
    assert mcp_server.seen() == []


def test_get_with_trailers_and_no_body_is_a_stream_request(recording_envoy, upstream):
    """Trailers alone make no body: the GET goes on once they came."""
    upstream.clear()
    reply = h2_request(recording_envoy.port, "GET", "/mcp", HEADERS, None, trailers=[("x-foo", "bar")])
    assert reply.status == 200, reply.body
    assert [r["method"] for r in upstream.requests] == ["GET"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp",
                                  "/.well-known/oauth-protected-resource"])
def test_metadata_paths_are_answered_for_every_method_and_never_forwarded(envoy, mcp_server, transport, path):
    h = [("origin", "https://app.example"), ("access-control-request-method", "GET"),
         ("content-type", "application/json")]
    reply = send(transport, envoy, "OPTIONS", path, h, DELETE)
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == ["*"]
    assert "GET" in reply.headers["access-control-allow-methods"][0]
    reply = send(transport, envoy, "PUT", path, h, DELETE)
    assert reply.status == 405
    reply = send(transport, envoy, "get" if transport == "h2" else "GET", path, [])
    assert reply.status == 200
    assert json.loads(reply.body)["resource"] == RESOURCE
    assert reply.headers["access-control-allow-origin"] == ["*"]
    assert mcp_server.seen() == []


# --- what an allowed request carries -------------------------------------------

@pytest.fixture(scope="module")
def recording_envoy(envoy_version, upstream):
    with Envoy(envoy_version, config(), upstream.port) as e:
        yield e


def test_accept_encoding_is_not_passed_on(recording_envoy, upstream):
    """The upstream answers in plain bytes the filter can read."""
    upstream.clear()
    status, _, _ = raw_post(recording_envoy, WEATHER, READER, {"Accept-Encoding": "gzip, deflate, br"})
    assert status == 200
    assert "accept-encoding" not in upstream.requests[0]["headers"]


# --- shapes an outsider found -------------------------------------------------

def raw_exchange(port, request_bytes):
    """Sends raw bytes on a fresh connection; returns the status line's code."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_a_header_value_that_is_not_utf8_crashes_nothing(envoy, mcp_server):
    """HTTP lets a header value carry bytes that are not UTF-8: the filter
    answers the request and goes on serving everyone."""
    status = raw_exchange(envoy.port, b"GET /mcp HTTP/1.1\r\nHost: a\r\nX-Foo: \xff\xfe\r\n"
                                      b"Connection: close\r\n\r\n")
    assert status == 401
    body = json.dumps(WEATHER).encode()
    status = raw_exchange(envoy.port, b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                                      b"Accept: application/json, text/event-stream\r\n"
                                      b"Authorization: Bearer " + READER.encode() + b"\r\nX-Foo: \xc3\x28\r\n"
                                      b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                                      b"Connection: close\r\n\r\n" + body)
    assert status == 200
    for _ in range(3):
        status, _, out = raw_post(envoy, WEATHER, READER)
        assert status == 200, out
    assert "panicked" not in envoy.logs()


def test_request_trailers_carry_nothing_to_the_mcp_endpoint(envoy_version):
    """An allowed call with a token, identity and routing headers in its
    trailers: the upstream gets the call, and none of the trailers."""
    upstream = ScriptedUpstream(http2=True)
    try:
        with Envoy(envoy_version, config(), upstream.port, upstream_http2=True) as e:
            upstream.script = Script(headers=[("content-type", "application/json")],
                                     chunks=['{"jsonrpc":"2.0","id":1,"result":{}}'])
            trailers = [("authorization", f"Bearer {ADMIN}"), ("x-mcp-roles", "admin"),
                        ("x_mcp_subject", "root"), ("mcp-name", "delete_everything"), ("x-foo", "bar")]
            reply = h2_request(e.port, "POST", "/mcp", HEADERS, json.dumps(WEATHER), trailers)
            assert reply.status == 200, reply.body
            [seen] = upstream.requests
            assert seen["trailers"] == []
            assert not any(k == "authorization" for k, _ in seen["headers"])
            # A public path keeps its trailers, but never a token or an identity.
            upstream.clear()
            reply = h2_request(e.port, "POST", "/healthz", [("content-type", "text/plain")], "ping", trailers)
            assert reply.status == 200
            [seen] = upstream.requests
            names = [k for k, _ in seen["trailers"]]
            assert names == ["mcp-name", "x-foo"], names
    finally:
        upstream.close()


@pytest.mark.parametrize("spelling", ["Mcp_Name", "mcp_name", "MCP_NAME"])
def test_routing_headers_in_other_spellings_are_checked_too(envoy, mcp_server, spelling):
    """`Mcp_Name` is `Mcp-Name` to a CGI-style server."""
    status, _, body = raw_post(envoy, WEATHER, READER, {spelling: "delete_everything"})
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == -32020
    status, _, body = raw_post(envoy, WEATHER, READER, {"Mcp-Name": "get_weather", spelling: "get_weather"})
    assert status == 400, "two spellings are two copies"
    assert mcp_server.seen() == []


@pytest.mark.parametrize("uri", ["SECRET://keys", " secret://keys", "secret://keys ", "secret://%6beys",
                                 "docs://readme/../../secret", "Docs://readme"])
def test_resource_uris_in_another_spelling_are_refused(envoy, mcp_server, uri):
    """A server may normalise a URI before reading it; a rule matches the
    text. Only the normal form is taken."""
    status, _, out = raw_post(envoy, rpc("resources/read", uri=uri), READER)
    assert status == 400, out
    assert json.loads(out)["error"]["code"] == -32600
    assert "normal form" in json.loads(out)["error"]["message"]
    assert mcp_server.seen() == []
