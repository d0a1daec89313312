"""Hostile requests against rule conditions, `Mcp-Param-*` headers and
scope challenges (README "Conditions", "Request handling" step 5, the rules'
`insufficient_scope` answer), in a real Envoy on both versions.

The upstream is scripted (`wire.ScriptedUpstream`): it answers `tools/list`
with the tools a test declares and records every request, so "refused"
here means the request never reached it."""

import json

import pytest

from configs import ISSUER, base_config, inline_provider
from harness import Envoy
from mcp_client import ACCEPT, LIST, assert_forbidden, assert_refused, call, raw_post, routing_headers
from tokens import RsaKey, claims
from wire import Script, ScriptedUpstream, h2_request

KEY = RsaKey("attack-conditions")

RULES = [
    {"name": "everyone lists", "effect": "allow",
     "methods": ["initialize", "notifications/*", "tools/list"]},
    {"name": "own tenant header", "effect": "deny", "methods": ["tools/call"], "names": ["query"],
     "when": "request.headers['x-tenant'] != token.claims.tenant"},
    {"name": "nobody pays mallory", "effect": "deny", "methods": ["tools/call"], "names": ["pay"],
     "when": "request.arguments.to == 'mallory'"},
    {"name": "calls", "effect": "allow", "methods": ["tools/call"], "names": ["query", "pay", "account", "under", "q"]},
    {"name": "writers write", "effect": "allow", "methods": ["tools/call"], "names": ["write"],
     "scopes": ["mcp:write"]},
]

# What the scripted server lists: an integer and an underscore-named header.
TOOLS = [
    {"name": "account", "inputSchema": {"type": "object", "properties": {
        "account": {"type": "integer", "x-mcp-header": "Account"}}}},
    {"name": "under", "inputSchema": {"type": "object", "properties": {
        "tenant": {"type": "string", "x-mcp-header": "Tenant_Id"}}}},
]


class McpScript:
    """Answers `tools/list` with `self.tools`, anything else with an empty
    tool result."""

    def __init__(self, tools):
        self.tools = tools

    def __call__(self, request):
        body = json.loads(request["body"]) if request["body"] else None
        if isinstance(body, dict) and body.get("method") == "tools/list":
            result = {"tools": self.tools}
        else:
            result = {"content": [{"type": "text", "text": "done"}]}
        answer = {"jsonrpc": "2.0", "id": body.get("id") if isinstance(body, dict) else None, "result": result}
        return Script(200, [("content-type", "application/json")], [json.dumps(answer)])


def config(port, **fields):
    return base_config([inline_provider(KEY)], RULES, resource=f"http://127.0.0.1:{port}/mcp",
                       scopes_supported=["mcp:read", "mcp:write"], **fields)


def token(port, **extra):
    return KEY.sign(claims(ISSUER, f"http://127.0.0.1:{port}/mcp", sub="mallet", ttl=3600, **extra))


@pytest.fixture(scope="module")
def stack(envoy_version):
    upstream = ScriptedUpstream()
    upstream.script = McpScript(TOOLS)
    try:
        with Envoy(envoy_version, config, upstream.port) as envoy:
            yield envoy, upstream
    finally:
        upstream.close()


def calls_seen(upstream):
    out = []
    for request in upstream.requests:
        body = json.loads(request["body"]) if request["body"] else None
        if isinstance(body, dict) and body.get("method") == "tools/call":
            out.append(body["params"])
    return out


def learn_tools(envoy, upstream, port):
    status, _, body = raw_post(envoy, LIST, token(port))
    assert status == 200, body
    upstream.clear()


# ---------------------------------------------------------------------------
# request.headers: one header, one value


@pytest.mark.parametrize("headers", [
    [("x-tenant", "acme"), ("x-tenant", "globex-7731")],
    [("x-tenant", "acme"), ("x_tenant", "globex-7731")],
    [("X_Tenant", "globex-7731"), ("x-tenant", "acme")],
    [("x_tenant", "acme")],
], ids=["repeated", "underscore-after", "underscore-before", "underscore-only"])
def test_a_condition_on_a_header_sent_twice_or_respelled_counts_against_the_caller(stack, headers):
    """The deny rule reads `x-tenant`; the filter sees the first copy, while
    a server may act on the last, on both joined, or on `x_tenant` as
    `x-tenant`. Such a header has no value the condition can trust."""
    envoy, upstream = stack
    tok = token(envoy.port, tenant="acme")
    upstream.clear()
    query = call("query", id=7, arguments={"sql": "select 1"})
    status, _, body = raw_post(envoy, query, tok, [("x-tenant", "acme")])
    assert status == 200, body
    assert len(calls_seen(upstream)) == 1

    upstream.clear()
    before = envoy.counters().get("condition_error", 0)
    query = call("query", id=7, arguments={"sql": "select 2"})
    status, answer_headers, body = raw_post(envoy, query, tok, headers)
    assert_forbidden(status, answer_headers, body, id=7)
    assert calls_seen(upstream) == [], "the call never reached the server"
    assert envoy.counters().get("condition_error", 0) == before + 1
    assert "own tenant header" in envoy.logs()
    assert "globex-7731" not in envoy.logs(), "the header's value stays out of the log"


# ---------------------------------------------------------------------------
# Comparisons across types are errors, and errors count against the caller


@pytest.mark.parametrize("to", [["mallory"], {"name": "mallory"}, "mallory"],
                         ids=["list", "object", "string"])
def test_a_deny_condition_holds_for_an_argument_of_another_type(stack, to):
    """CEL answers `['mallory'] == 'mallory'` with false; a lenient server
    reads the list as `mallory` all the same. The README: a wrong type
    counts against the caller, true for a deny rule."""
    envoy, upstream = stack
    tok = token(envoy.port)
    upstream.clear()
    status, headers, body = raw_post(envoy, call("pay", id=7, arguments={"to": to, "amount": 5}), tok)
    assert_forbidden(status, headers, body, id=7)
    assert calls_seen(upstream) == []
    status, _, body = raw_post(envoy, call("pay", id=7, arguments={"to": "bob", "amount": 5}), tok)
    assert status == 200, body
    assert calls_seen(upstream) == [{"name": "pay", "arguments": {"to": "bob", "amount": 5}}]


# ---------------------------------------------------------------------------
# Mcp-Param-* headers


@pytest.mark.parametrize("account, header", [
    (9007199254740993, "9007199254740992"),
    (42, "42.0000000000000001"),
    (42.5, "42.5"),
], ids=["beyond-2^53", "fraction-a-double-rounds-away", "not-an-integer"])
def test_an_integer_header_must_equal_the_argument_exactly(stack, account, header):
    """A double takes 2^53 + 1 for 2^53: a router keyed on the header would
    send the call for one account while the server acts on another."""
    envoy, upstream = stack
    learn_tools(envoy, upstream, envoy.port)
    body = call("account", id=7, arguments={"account": account})
    status, headers, body = raw_post(envoy, body, token(envoy.port),
                                     [*routing_headers(body), ("Mcp-Param-Account", header)])
    assert_refused(status, headers, body, 400, code=-32020, id=7)
    assert calls_seen(upstream) == []


@pytest.mark.parametrize("header", ["42", "42.0", "4.2e1", "+42"])
def test_an_integer_header_that_equals_the_argument_passes(stack, header):
    envoy, upstream = stack
    learn_tools(envoy, upstream, envoy.port)
    body = call("account", id=7, arguments={"account": 42})
    status, _, body = raw_post(envoy, body, token(envoy.port),
                               [*routing_headers(body), ("Mcp-Param-Account", header)])
    assert status == 200, body
    assert calls_seen(upstream) == [{"name": "account", "arguments": {"account": 42}}]


def test_a_header_name_with_an_underscore_is_checked(stack):
    """`Tenant_Id` is a valid `x-mcp-header` name: its header must be found
    in every spelling, so a disagreeing one is refused and an agreeing one
    passes."""
    envoy, upstream = stack
    learn_tools(envoy, upstream, envoy.port)
    tok = token(envoy.port)
    under = call("under", id=7, arguments={"tenant": "acme"})
    for name in ["Mcp-Param-Tenant_Id", "Mcp-Param-Tenant-Id"]:
        status, headers, body = raw_post(envoy, under, tok, [(name, "globex")])
        assert_refused(status, headers, body, 400, code=-32020, id=7)
        status, _, body = raw_post(envoy, under, tok, [*routing_headers(under), (name, "acme")])
        assert status == 200, (name, body)
    assert calls_seen(upstream) == [{"name": "under", "arguments": {"tenant": "acme"}}] * 2


def test_every_worker_checks_against_the_newest_list(envoy_version):
    """Two workers: once the server declares a new mirrored parameter and a
    list shows it, no worker lets a call with a disagreeing header through
    (a worker must not keep checking against an older list it remembers)."""
    script = McpScript([{"name": "q", "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"}}}}])
    upstream = ScriptedUpstream()
    upstream.script = script
    try:
        with Envoy(envoy_version, config, upstream.port, concurrency=2) as envoy:
            tok = token(envoy.port)
            q = call("q", id=7, arguments={"region": "eu", "tenant": "acme"})
            # Each request is a new connection, so both workers learn the
            # first list and check calls with it.
            for _ in range(12):
                assert raw_post(envoy, LIST, tok)[0] == 200
                assert raw_post(envoy, q, tok, [("Mcp-Param-Region", "us")])[0] == 400
            script.tools = [{"name": "q", "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "tenant": {"type": "string", "x-mcp-header": "Tenant"}}}}]
            assert raw_post(envoy, LIST, tok)[0] == 200
            upstream.clear()
            statuses = [raw_post(envoy, q, tok, [("Mcp-Param-Region", "eu"), ("Mcp-Param-Tenant", "globex")])[0]
                        for _ in range(24)]
            assert statuses == [400] * 24, statuses
            assert calls_seen(upstream) == []
            # And back: a list without the parameter is the newest word too.
            script.tools = [{"name": "q", "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"}}}}]
            assert raw_post(envoy, LIST, tok)[0] == 200
            statuses = [raw_post(envoy, q, tok, [*routing_headers(q), ("Mcp-Param-Region", "eu")])[0]
                        for _ in range(24)]
            assert statuses == [200] * 24, statuses
    finally:
        upstream.close()


@pytest.mark.parametrize("version", [b" 2026-07-28", b"2026-07-28 ", b"\t2026-07-28"],
                         ids=["leading-space", "trailing-space", "leading-tab"])
def test_a_2026_version_header_with_whitespace_around_it_is_a_2026_request(stack, version):
    """HTTP/2 carries the value as sent; an HTTP/1.1 server (the SDK's,
    behind Envoy) drops the whitespace and serves a 2026-07-28 request. The
    filter reads it the same way: without `Mcp-Method`, or without the
    mirrored parameter's header, it is refused."""
    envoy, upstream = stack
    learn_tools(envoy, upstream, envoy.port)
    headers = [(b"content-type", b"application/json"), (b"accept", ACCEPT.encode()),
               (b"authorization", f"Bearer {token(envoy.port)}".encode()), (b"mcp-protocol-version", version)]
    body = json.dumps(call("account", id=7, arguments={"account": 42})).encode()
    reply = h2_request(envoy.port, "POST", "/mcp", headers, body)
    assert_refused(reply.status, reply.headers, reply.body, 400, code=-32020, id=7)
    routed = headers + [(b"mcp-method", b"tools/call"), (b"mcp-name", b"account")]
    reply = h2_request(envoy.port, "POST", "/mcp", routed, body)
    assert_refused(reply.status, reply.headers, reply.body, 400, code=-32020, id=7)
    assert b"Mcp-Param header missing" in reply.body
    assert calls_seen(upstream) == []
    reply = h2_request(envoy.port, "POST", "/mcp", routed + [(b"mcp-param-account", b" 42 ")], body)
    assert reply.status == 200, reply.body
    assert calls_seen(upstream) == [{"name": "account", "arguments": {"account": 42}}]


# ---------------------------------------------------------------------------
# The scope challenge


@pytest.mark.parametrize("odd", ['a"b', "a\\b", "a\x01b", "a\x00b", "\u00fcber", "a,b\x7f"],
                         ids=["quote", "backslash", "control", "nul", "non-ascii", "del"])
def test_a_held_scope_that_is_no_scope_token_stays_out_of_the_challenge(stack, odd):
    """The challenge names the caller's held scopes so a re-authorization
    keeps them; one that is no RFC 6749 scope token would close the quoted
    `scope` early (`a"b`), or put control bytes in a response header."""
    envoy, upstream = stack
    upstream.clear()
    tok = token(envoy.port, scope=f"mcp:read {odd}")
    status, headers, body = raw_post(envoy, call("write", id=7, arguments={}), tok)
    assert_refused(status, headers, body, 403, code=-32004, id=7)
    (challenge,) = headers["www-authenticate"]
    assert challenge == ('Bearer error="insufficient_scope", scope="mcp:write mcp:read", '
                         f'resource_metadata="http://127.0.0.1:{envoy.port}/.well-known/oauth-protected-resource/mcp"')
    assert json.loads(body)["error"]["message"] == "Insufficient scope: this call needs mcp:write mcp:read"
    assert calls_seen(upstream) == []
