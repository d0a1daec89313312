"""MCP-aware authorization (CONTRACT sections 3 "Rules", 4.5-4.8, 5) end to
end: a real Envoy with the built filter in front of a real MCP server, the
official Python SDK (`mcp` 2.x, `tests/mcp_upstream.py`), on both Envoy
versions.

The server records every HTTP request that reaches it, before the SDK sees it,
so "refused" always means two things here: the client got the filter's answer,
and the server never saw the call.

Upstreams: the SDK server in its default shape (sessions for handshake-era
requests, SSE answers) behind `/mcp`, and a second one in JSON-response,
stateless mode behind `/json/mcp` (Envoy rewrites the prefix). 2026-07-28
requests (the SDK's default protocol) are stateless in both.
"""

import base64
import http.client
import json
import time

import pytest

from configs import ISSUER, METADATA_URL, RESOURCE, SCOPES, TOOL_RULES, base_config, inline_provider
from harness import Envoy, cluster, read_response
from mcp_upstream import McpUpstream
from tokens import RsaKey, claims
from wire import sse_messages

KEY = RsaKey("k1")
MAX_BODY = 4096

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
BATCH_ERA = "2025-03-26"

# The interop tests' policy over the SDK server's tools (everyone lists;
# readers with mcp:read call get_* and search; admins with mcp:write call
# anything; nobody deletes), and a prompt and the docs for readers.
RULES = TOOL_RULES + [
    {"name": "readers prompt", "effect": "allow", "methods": ["prompts/get"],
     "names": ["summary"], "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
    {"name": "readers read docs", "effect": "allow", "methods": ["resources/read"],
     "names": ["docs://*"], "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
]


def config(**overrides):
    return base_config([inline_provider(KEY)], RULES, scopes_supported=SCOPES,
                       identity_headers={"x-mcp-subject": "sub", "x-mcp-roles": "$roles"},
                       max_body_bytes=MAX_BODY) | overrides


def mint(sub, roles, scope):
    return KEY.sign(claims(ISSUER, RESOURCE, sub=sub, roles=roles, scope=scope, ttl=3600))


READER = mint("alice", ["reader"], "mcp:read")
READER_NO_SCOPE = mint("bob", ["reader"], "")
ADMIN = mint("root", ["admin"], "mcp:read mcp:write")
NO_ROLES = mint("eve", [], "mcp:read mcp:write")
TOKENS = [READER, READER_NO_SCOPE, ADMIN, NO_ROLES]

# The filter's own JSON-RPC error codes (src/answer.rs): an answer carrying
# one of these came from the filter, not from the server.
FILTER_CODES = {-32700, -32600, -32020, -32001, -32002, -32003, -32004, -32005}


# ---------------------------------------------------------------------------
# Fixtures: one SDK server of each shape per module, one Envoy per version


def start_envoy(version, plugin_config, mcp_server, mcp_json_server):
    """Envoy with the filter; `/json/...` goes to the JSON-mode server with
    the prefix rewritten, everything else to the default server."""
    e = Envoy(version, plugin_config, mcp_server.port, clusters=[cluster("mcp_json", mcp_json_server.port)])
    with open(e.config_path) as f:
        boot = json.load(f)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"].insert(0, {
        "match": {"prefix": "/json/"},
        "route": {"cluster": "mcp_json", "prefix_rewrite": "/", "timeout": "30s"}})
    with open(e.config_path, "w") as f:
        json.dump(boot, f)
    return e.start()


@pytest.fixture(scope="module")
def mcp_server():
    with McpUpstream(json_response=False, stateless=False) as server:
        yield server


@pytest.fixture(scope="module")
def mcp_json_server():
    with McpUpstream(json_response=True, stateless=True) as server:
        yield server


@pytest.fixture(scope="module")
def envoy(envoy_version, mcp_server, mcp_json_server):
    e = start_envoy(envoy_version, config(), mcp_server, mcp_json_server)
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture(scope="module")
def audit_envoy(envoy_version, mcp_server, mcp_json_server):
    e = start_envoy(envoy_version, config(mode="audit"), mcp_server, mcp_json_server)
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture(autouse=True)
def fresh_records(mcp_server, mcp_json_server):
    mcp_server.clear()
    mcp_json_server.clear()


# ---------------------------------------------------------------------------
# Requests

CLIENT_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcp-authz-e2e", "version": "1.0"},
}
ACCEPT = "application/json, text/event-stream"
NAME_FIELD = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def modern_headers(method, name=None, token=READER, **extra):
    """The headers a 2026-07-28 client sends with a POST."""
    h = {"Content-Type": "application/json", "Accept": ACCEPT,
         "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    if token:
        h["Authorization"] = f"Bearer {token}"
    h.update(extra)
    return h


def modern_call(envoy, method, params=None, token=READER, id=1, path="/mcp", headers=None, meta=None):
    """One 2026-07-28 request: `_meta` envelope in the body, routing headers."""
    p = dict(params or {})
    p["_meta"] = {**CLIENT_META, **(meta or {})}
    field = NAME_FIELD.get(method)
    name = p.get(field) if field else None
    h = modern_headers(method, name, token)
    h.update(headers or {})
    return envoy.request("POST", path, {"jsonrpc": "2.0", "id": id, "method": method, "params": p}, h)


def tool_call(envoy, tool, arguments=None, **kw):
    return modern_call(envoy, "tools/call", {"name": tool, "arguments": arguments or {}}, **kw)


def raw_post(envoy, body, token=READER, headers=None, path="/mcp"):
    """POSTs `body` exactly as given (bytes or str)."""
    h = {"Content-Type": "application/json", "Accept": ACCEPT}
    if token:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    return envoy.request("POST", path, body, h)


META_JSON = json.dumps(CLIENT_META)


def raw_modern(method_src, params_src, id_src="1"):
    """A 2026-07-28 request body built from JSON source text, so escapes and
    duplicate keys reach the wire exactly as written."""
    return (f'{{"jsonrpc":"2.0","id":{id_src},"method":{method_src},'
            f'"params":{{{params_src},"_meta":{META_JSON}}}}}')


def legacy_headers(token=READER, session=None, version=LEGACY):
    h = {"Content-Type": "application/json", "Accept": ACCEPT, "MCP-Protocol-Version": version}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if session:
        h["Mcp-Session-Id"] = session
    return h


def messages(headers, body):
    """The JSON-RPC messages of an answer, `application/json` or `text/event-stream`."""
    ctype = (headers.get("content-type") or [""])[0]
    if ctype.startswith("text/event-stream"):
        return sse_messages(body)
    assert ctype.startswith("application/json"), (ctype, body[:300])
    parsed = json.loads(body)
    return parsed if isinstance(parsed, list) else [parsed]


def reply(headers, body):
    """The JSON-RPC response (not a notification) in an answer."""
    found = [m for m in messages(headers, body) if "id" in m and ("result" in m or "error" in m)]
    assert len(found) == 1, body[:500]
    return found[0]


def result_text(headers, body):
    r = reply(headers, body)
    assert "result" in r, r
    return " ".join(c.get("text", "") for c in r["result"]["content"])


def assert_no_token(headers, body):
    blob = body + json.dumps(headers).encode()
    for token in TOKENS:
        assert token.encode() not in blob, "an answer echoed the token"
        # The signature alone is enough to replay nothing, but the payload
        # carries claims: neither part may appear.
        for part in token.split("."):
            assert part.encode() not in blob


def assert_refused(status, headers, body, expected_status, code=None, id=None):
    """A refusal by the filter: the status, a JSON-RPC error body with the
    request's id, and no token text anywhere in it."""
    assert status == expected_status, (status, body[:300])
    assert headers["content-type"] == ["application/json"], headers
    err = json.loads(body)
    assert err["jsonrpc"] == "2.0" and set(err) == {"jsonrpc", "id", "error"}, err
    assert err["id"] == id, err
    if code is not None:
        assert err["error"]["code"] == code, err
    assert_no_token(headers, body)
    return err


def assert_forbidden(status, headers, body, id=1):
    err = assert_refused(status, headers, body, 403, id=id)
    assert -32019 <= err["error"]["code"] <= -32000, err
    assert "www-authenticate" not in headers, "a plain denial is not a scope challenge"
    return err


def assert_from_server(status, headers, body):
    """The answer is the server's, not a refusal by the filter."""
    assert status not in (401, 403, 413, 415), (status, body[:300])
    if status >= 400 and body:
        err = json.loads(body)
        assert err.get("error", {}).get("code") not in FILTER_CODES, err


def open_stream(port, method, path, headers):
    """Sends a request and reads the head; an event stream is closed without
    waiting for its end. Returns (status, headers, body or b"")."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        hdrs = {}
        for k, v in resp.getheaders():
            hdrs.setdefault(k.lower(), []).append(v)
        if (hdrs.get("content-type") or [""])[0].startswith("text/event-stream"):
            return resp.status, hdrs, b""
        return resp.status, hdrs, resp.read()
    finally:
        conn.close()


def decisions(envoy, kind):
    """The filter's JSON decision log lines of one kind ("deny", "would_deny", "allow")."""
    out = []
    for line in envoy.logs().splitlines():
        start = line.find('{"')
        if start < 0 or f'"mcp_authz":"{kind}"' not in line:
            continue
        try:
            out.append(json.loads(line[start:]))
        except ValueError:
            pass
    return out


# ---------------------------------------------------------------------------
# Rules decide: tools


def test_reader_calls_allowed_tool_and_gets_the_servers_answer(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "get_weather", {"city": "Paris"}, id=11)
    assert status == 200, body
    r = reply(headers, body)
    assert r["id"] == 11
    assert result_text(headers, body) == "Weather in Paris: sunny, 21 C"
    seen = mcp_server.seen()
    assert [m for r in seen for m in r["rpc"]] == [{"method": "tools/call", "name": "get_weather", "id": 11}]
    assert seen[0]["headers"]["x-mcp-subject"] == ["alice"]
    assert seen[0]["headers"]["x-mcp-roles"] == ["reader"]
    assert seen[0]["authorization"] is False, "token_forwarding strip: the server never sees the token"


def test_reader_calling_write_tool_is_forbidden_and_never_reaches_server(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "set_config", {"key": "k", "value": "v"}, id="req-7")
    assert_forbidden(status, headers, body, id="req-7")
    assert mcp_server.seen() == []


def test_reader_without_read_scope_gets_step_up_challenge(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "get_weather", {"city": "Paris"}, token=READER_NO_SCOPE, id=12)
    err = assert_refused(status, headers, body, 403, id=12)
    assert -32019 <= err["error"]["code"] <= -32000
    assert headers["www-authenticate"] == [
        f'Bearer error="insufficient_scope", scope="mcp:read", resource_metadata="{METADATA_URL}"']
    assert mcp_server.seen() == []


def test_admin_with_write_scope_calls_write_tool(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "set_config", {"key": "colour", "value": "blue"}, token=ADMIN)
    assert status == 200, body
    assert result_text(headers, body) == "config colour set to blue"
    seen = mcp_server.seen()
    assert mcp_server.calls() == [("tools/call", "set_config")]
    assert seen[0]["headers"]["x-mcp-subject"] == ["root"]
    assert seen[0]["headers"]["x-mcp-roles"] == ["admin"]


def test_deny_rule_wins_even_for_admin_with_every_scope(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "delete_everything", token=ADMIN, id=13)
    assert_forbidden(status, headers, body, id=13)
    assert mcp_server.seen() == []


def test_caller_without_a_role_is_forbidden_not_challenged(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "get_weather", {"city": "Paris"}, token=NO_ROLES)
    assert_forbidden(status, headers, body)
    assert mcp_server.seen() == []


def test_search_answered_as_event_stream_passes_through(envoy, mcp_server):
    """An allowed call whose answer the server streams as SSE (a progress
    notification, then the result) arrives whole."""
    status, headers, body = modern_call(envoy, "tools/call", {"name": "search", "arguments": {"query": "mcp"}},
                                        meta={"progressToken": "p-1"})
    assert status == 200, body
    assert headers["content-type"][0].startswith("text/event-stream")
    msgs = messages(headers, body)
    assert msgs[0]["method"] == "notifications/progress"
    assert result_text(headers, body) == "3 results for mcp"
    assert mcp_server.calls() == [("tools/call", "search")]


def test_method_no_rule_covers_is_denied_by_default(envoy, mcp_server):
    status, headers, body = modern_call(envoy, "resources/templates/list", token=ADMIN, id=14)
    assert_forbidden(status, headers, body, id=14)
    assert mcp_server.seen() == []


@pytest.mark.parametrize("method", ["server/discover", "tools/list", "prompts/list", "resources/list"])
def test_everyone_may_list_and_discover(envoy, mcp_server, method):
    status, headers, body = modern_call(envoy, method, token=NO_ROLES, id=15)
    assert status == 200, body
    r = reply(headers, body)
    assert r["id"] == 15 and "result" in r, r
    assert mcp_server.calls() == [(method, None)]


def test_everyone_may_ping(envoy, mcp_json_server):
    # 2026-07-28 has no ping; a handshake-era (stateless) request does.
    status, headers, body = envoy.request("POST", "/json/mcp", {"jsonrpc": "2.0", "id": 16, "method": "ping"},
                                          legacy_headers(NO_ROLES))
    assert status == 200, body
    assert reply(headers, body) == {"jsonrpc": "2.0", "id": 16, "result": {}}
    assert mcp_json_server.calls() == [("ping", None)]


# ---------------------------------------------------------------------------
# Rules decide: prompts and resources

PROMPT_CASES = [
    ("reader gets summary", READER, "summary", True),
    ("reader gets admin_prompt", READER, "admin_prompt", False),
    ("admin gets admin_prompt (no rule allows it)", ADMIN, "admin_prompt", False),
    ("reader without scope gets summary", READER_NO_SCOPE, "summary", False),
]


@pytest.mark.parametrize("token,prompt,allowed", [c[1:] for c in PROMPT_CASES], ids=[c[0] for c in PROMPT_CASES])
def test_prompts_get_follows_the_rules(envoy, mcp_server, token, prompt, allowed):
    status, headers, body = modern_call(envoy, "prompts/get", {"name": prompt}, token=token, id=21)
    if allowed:
        assert status == 200, body
        r = reply(headers, body)
        assert r["result"]["messages"][0]["content"]["text"] == "Please summarise the document."
        assert mcp_server.calls() == [("prompts/get", prompt)]
    else:
        assert_refused(status, headers, body, 403, id=21)
        assert mcp_server.seen() == []


RESOURCE_CASES = [
    ("reader reads docs", READER, "docs://readme", True),
    ("reader reads secrets", READER, "secret://keys", False),
    ("admin reads secrets (no rule allows it)", ADMIN, "secret://keys", False),
    ("no role reads docs", NO_ROLES, "docs://readme", False),
]


@pytest.mark.parametrize("token,uri,allowed", [c[1:] for c in RESOURCE_CASES], ids=[c[0] for c in RESOURCE_CASES])
def test_resources_read_follows_the_rules(envoy, mcp_server, token, uri, allowed):
    status, headers, body = modern_call(envoy, "resources/read", {"uri": uri}, token=token, id=22)
    if allowed:
        assert status == 200, body
        r = reply(headers, body)
        assert r["result"]["contents"][0]["text"] == "README: how to use this server"
        assert mcp_server.calls() == [("resources/read", uri)]
    else:
        assert_forbidden(status, headers, body, id=22)
        assert b"TOP SECRET" not in body
        assert mcp_server.seen() == []


# ---------------------------------------------------------------------------
# Bypasses (FIELD-NOTES): each refused, and the server never saw the call

CALL = {"jsonrpc": "2.0", "method": "tools/call"}


@pytest.mark.parametrize("token,batch", [
    (READER, [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
              {**CALL, "id": 2, "params": {"name": "set_config", "arguments": {"key": "k", "value": "v"}}}]),
    (ADMIN, [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
             {**CALL, "id": 2, "params": {"name": "delete_everything", "arguments": {}}}]),
    (ADMIN, [{**CALL, "id": 1, "params": {"name": "get_weather", "arguments": {"city": "x"}}},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {**CALL, "id": 2, "params": {"name": "delete_everything", "arguments": {}}}]),
], ids=["reader-write-after-list", "admin-delete-after-list", "admin-delete-after-allowed-call"])
def test_batch_smuggling_refuses_the_whole_batch(envoy, mcp_server, token, batch):
    status, headers, body = raw_post(envoy, json.dumps(batch), token=token,
                                     headers={"MCP-Protocol-Version": BATCH_ERA})
    assert_forbidden(status, headers, body, id=None)
    assert mcp_server.seen() == [], "no element of a refused batch reaches the server"


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


def test_forbidden_call_sent_as_notification_is_refused(envoy, mcp_server):
    """Without an id the call is a notification; rules still apply to it."""
    body = {"jsonrpc": "2.0", "method": "tools/call",
            "params": {"name": "delete_everything", "arguments": {}, "_meta": CLIENT_META}}
    status, headers, out = envoy.request("POST", "/mcp", body, modern_headers("tools/call", "delete_everything", ADMIN))
    assert_forbidden(status, headers, out, id=None)
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


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", None])
def test_post_not_declared_json_is_refused_415(envoy, mcp_server, content_type):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "delete_everything", "arguments": {}, "_meta": CLIENT_META}})
    h = {"Authorization": f"Bearer {ADMIN}", "Accept": ACCEPT, "MCP-Protocol-Version": MODERN}
    if content_type:
        h["Content-Type"] = content_type
    status, headers, out = envoy.request("POST", "/mcp", body, h)
    assert_refused(status, headers, out, 415)
    assert mcp_server.seen() == []


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


def test_json_content_type_with_parameters_is_accepted(envoy, mcp_server):
    status, headers, body = tool_call(envoy, "get_weather", {"city": "Rome"},
                                      headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, body
    assert mcp_server.calls() == [("tools/call", "get_weather")]


@pytest.mark.parametrize("mcp_method,mcp_name,body_name", [
    ("tools/call", "get_weather", "delete_everything"),
    ("tools/call", "delete_everything", "get_weather"),
    ("tools/list", "get_weather", "get_weather"),
    ("tools/call", "=?base64?Z2V0X3dlYXRoZXI=?=", "set_config"),
    ("tools/call", "=?base64?not base64!?=", "get_weather"),
], ids=["name-safe-body-danger", "name-danger-body-safe", "method-differs", "base64-name-differs",
        "base64-broken"])
def test_mcp_headers_disagreeing_with_body_are_refused(envoy, mcp_server, mcp_method, mcp_name, body_name):
    body = {"jsonrpc": "2.0", "id": 41, "method": "tools/call",
            "params": {"name": body_name, "arguments": {}, "_meta": CLIENT_META}}
    h = modern_headers(mcp_method, mcp_name, ADMIN)
    status, headers, out = envoy.request("POST", "/mcp", body, h)
    assert_refused(status, headers, out, 400, code=-32020, id=41)
    assert mcp_server.seen() == []


@pytest.mark.parametrize("header,values", [
    ("Mcp-Name", ["get_weather", "delete_everything"]),
    ("Mcp-Name", ["delete_everything", "get_weather"]),
    ("Mcp-Method", ["tools/call", "tools/list"]),
], ids=["name-body-value-first", "name-body-value-second", "method-body-value-first"])
def test_repeated_mcp_header_with_a_value_unlike_the_body_is_refused(envoy, mcp_server, header, values):
    """Two `Mcp-Name` (or `Mcp-Method`) lines: one of them does not equal the
    body, and a component reading the other copy (or the joined value) would
    act on a call the filter never checked."""
    body = json.dumps({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
                       "params": {"name": "get_weather", "arguments": {"city": "x"}, "_meta": CLIENT_META}}).encode()
    h = modern_headers("tools/call", "get_weather", ADMIN)
    del h[header]
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    try:
        conn.putrequest("POST", "/mcp")
        for k, v in h.items():
            conn.putheader(k, v)
        for v in values:
            conn.putheader(header, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        status, out = resp.status, resp.read()
        headers = {}
        for k, v in resp.getheaders():
            headers.setdefault(k.lower(), []).append(v)
    finally:
        conn.close()
    assert_refused(status, headers, out, 400, code=-32020, id=42)
    assert mcp_server.seen() == [], "the filter, not the server, must catch the disagreement"


@pytest.mark.parametrize("encoded", [
    "=?base64?" + base64.b64encode(b"get_weather").decode() + "?=",
    "=?base64?" + base64.b64encode("get_weather".encode()).decode().rstrip("=") + "?=",
], ids=["padded", "unpadded"])
def test_base64_mcp_name_of_the_body_name_is_allowed(envoy, mcp_server, encoded):
    status, headers, body = tool_call(envoy, "get_weather", {"city": "Oslo"}, headers={"Mcp-Name": encoded})
    # The filter accepts both; the SDK itself insists on canonical (padded)
    # base64, so the unpadded form is the server's 400, not the filter's.
    assert mcp_server.calls() == [("tools/call", "get_weather")], "the filter let it through"
    if encoded.endswith("=?="):
        assert status == 200, body
        assert result_text(headers, body) == "Weather in Oslo: sunny, 21 C"
    else:
        assert status == 400 and reply(headers, body)["error"]["code"] == -32020


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


def test_spoofed_identity_headers_are_replaced_by_verified_claims(envoy, mcp_server):
    status, _, body = tool_call(envoy, "get_weather", {"city": "Paris"},
                                headers={"x-mcp-subject": "admin", "x-mcp-roles": "admin"})
    assert status == 200, body
    seen = mcp_server.seen()[0]
    assert seen["headers"]["x-mcp-subject"] == ["alice"]
    assert seen["headers"]["x-mcp-roles"] == ["reader"]


def test_authorization_header_never_reaches_the_server(envoy, mcp_server):
    for token, tool in [(READER, "get_weather"), (ADMIN, "set_config")]:
        status, _, body = tool_call(envoy, tool, {"city": "a"} if tool == "get_weather" else {"key": "a", "value": "b"},
                                    token=token)
        assert status == 200, body
    seen = mcp_server.seen()
    assert len(seen) == 2
    assert all(r["authorization"] is False for r in seen)
    for token in TOKENS:
        assert all(token not in r["body"] for r in seen)


# ---------------------------------------------------------------------------
# Protocol eras


def test_2026_server_discover_is_allowed_and_answered_by_the_server(envoy, mcp_server):
    status, headers, body = modern_call(envoy, "server/discover", token=NO_ROLES, id=51)
    assert status == 200, body
    result = reply(headers, body)["result"]
    assert MODERN in result["supportedVersions"]
    assert "tools" in result["capabilities"]
    assert mcp_server.calls() == [("server/discover", None)]


def test_2025_03_26_batch_of_allowed_calls_passes_the_filter(envoy, mcp_server):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
             {**CALL, "id": 2, "params": {"name": "get_weather", "arguments": {"city": "Kyiv"}}},
             {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    status, headers, body = raw_post(envoy, json.dumps(batch), headers={"MCP-Protocol-Version": BATCH_ERA})
    seen = mcp_server.seen()
    assert len(seen) == 1 and seen[0]["batch"], "the whole batch reached the server"
    assert mcp_server.calls() == [("tools/list", None), ("tools/call", "get_weather"),
                                  ("notifications/initialized", None)]
    # SDK 2.x no longer accepts batches: its own 400 with -32602, not the filter's.
    assert_from_server(status, headers, body)


def test_legacy_session_works_end_to_end(envoy, mcp_server):
    """2025-11-25: initialize → notifications/initialized → tools/list →
    tools/call in a session; a forbidden call in the session is refused;
    the standalone GET stream opens; DELETE ends the session."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {},
                       "clientInfo": {"name": "mcp-authz-e2e", "version": "1.0"}}}
    h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {READER}"}
    status, headers, body = envoy.request("POST", "/mcp", init, h)
    assert status == 200, body
    assert reply(headers, body)["result"]["protocolVersion"] == LEGACY
    session = headers["mcp-session-id"][0]

    h = legacy_headers(READER, session)
    status, _, body = envoy.request("POST", "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"}, h)
    assert status == 202, body

    status, headers, body = envoy.request("POST", "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, h)
    assert status == 200, body
    assert headers["content-type"][0].startswith("text/event-stream")
    assert "get_weather" in [t["name"] for t in reply(headers, body)["result"]["tools"]]

    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "get_weather", "arguments": {"city": "Berlin"}}}
    status, headers, body = envoy.request("POST", "/mcp", call, h)
    assert status == 200, body
    assert result_text(headers, body) == "Weather in Berlin: sunny, 21 C"

    forbidden = {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                 "params": {"name": "set_config", "arguments": {"key": "k", "value": "v"}}}
    status, headers, body = envoy.request("POST", "/mcp", forbidden, h)
    assert_forbidden(status, headers, body, id=4)

    status, headers, _ = open_stream(envoy.port, "GET", "/mcp", {**h, "Accept": "text/event-stream"})
    assert status == 200 and headers["content-type"][0].startswith("text/event-stream")

    status, _, body = envoy.request("DELETE", "/mcp", None, h)
    assert status == 200, body
    status, _, body = envoy.request("POST", "/mcp", call, h)
    assert status == 404, "the server ended the session"

    assert [(r["http_method"], [(m["method"], m["name"]) for m in r["rpc"]]) for r in mcp_server.seen()] == [
        ("POST", [("initialize", None)]),
        ("POST", [("notifications/initialized", None)]),
        ("POST", [("tools/list", None)]),
        ("POST", [("tools/call", "get_weather")]),
        ("GET", []),
        ("DELETE", []),
        ("POST", [("tools/call", "get_weather")]),
    ]
    assert all(r["headers"]["mcp-session-id"] == [session] for r in mcp_server.seen()[1:])
    assert all(r["authorization"] is False for r in mcp_server.seen())


def test_session_id_is_no_authentication(envoy, mcp_server):
    """Every request in a session still needs a token, and the rules still
    apply to whoever holds the session id."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {},
                       "clientInfo": {"name": "mcp-authz-e2e", "version": "1.0"}}}
    status, headers, body = envoy.request("POST", "/mcp", init, legacy_headers(ADMIN))
    assert status == 200, body
    session = headers["mcp-session-id"][0]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "set_config", "arguments": {"key": "k", "value": "v"}}}
    status, headers, body = envoy.request("POST", "/mcp", call, legacy_headers(None, session))
    assert_refused(status, headers, body, 401)
    status, headers, body = envoy.request("POST", "/mcp", call, legacy_headers(READER, session))
    assert_forbidden(status, headers, body, id=2)
    assert mcp_server.calls() == [("initialize", None)]
    envoy.request("DELETE", "/mcp", None, legacy_headers(ADMIN, session))


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_with_a_token_reach_the_server(envoy, mcp_server, method):
    status, headers, body = open_stream(envoy.port, method, "/mcp",
                                        {"Accept": "text/event-stream", "Authorization": f"Bearer {NO_ROLES}"})
    # No session: the SDK's own 400 "Missing session ID".
    assert status == 400, body
    assert b"session" in body.lower()
    assert [r["http_method"] for r in mcp_server.seen()] == [method]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_without_a_token_are_refused_401(envoy, mcp_server, method):
    status, headers, body = open_stream(envoy.port, method, "/mcp", {"Accept": "text/event-stream"})
    assert_refused(status, headers, body, 401, code=-32001)
    assert headers["www-authenticate"][0].startswith(f'Bearer resource_metadata="{METADATA_URL}"')
    assert mcp_server.seen() == []


def test_posted_json_rpc_response_is_not_refused(envoy, mcp_json_server):
    """How a 2025 client answers the server's own requests (sampling,
    elicitation, roots): no rule applies, a valid token is enough."""
    status, headers, body = raw_post(envoy, '{"jsonrpc":"2.0","id":5,"result":{}}', token=NO_ROLES,
                                     headers={"MCP-Protocol-Version": LEGACY}, path="/json/mcp")
    assert status == 202, body
    assert [r["rpc"] for r in mcp_json_server.seen()] == [[{"method": None, "name": None, "id": 5}]]


def test_posted_json_rpc_response_still_needs_a_token(envoy, mcp_json_server):
    status, headers, body = raw_post(envoy, '{"jsonrpc":"2.0","id":5,"result":{}}', token=None,
                                     headers={"MCP-Protocol-Version": LEGACY}, path="/json/mcp")
    assert_refused(status, headers, body, 401)
    assert mcp_json_server.seen() == []


# ---------------------------------------------------------------------------
# The JSON-response, stateless server shape


def test_json_mode_server_modern_call_allowed(envoy, mcp_json_server, mcp_server):
    status, headers, body = tool_call(envoy, "search", {"query": "q"}, path="/json/mcp", meta={"progressToken": "p"})
    assert status == 200, body
    assert headers["content-type"] == ["application/json"]
    assert result_text(headers, body) == "3 results for q"
    assert mcp_json_server.calls() == [("tools/call", "search")]
    assert mcp_server.seen() == []


def test_json_mode_server_stateless_legacy_call_without_session(envoy, mcp_json_server):
    call = {"jsonrpc": "2.0", "id": 61, "method": "tools/call",
            "params": {"name": "get_weather", "arguments": {"city": "Madrid"}}}
    status, headers, body = envoy.request("POST", "/json/mcp", call, legacy_headers(READER))
    assert status == 200, body
    assert headers["content-type"] == ["application/json"]
    assert result_text(headers, body) == "Weather in Madrid: sunny, 21 C"
    seen = mcp_json_server.seen()
    assert [(m["method"], m["name"]) for r in seen for m in r["rpc"]] == [("tools/call", "get_weather")]
    assert seen[0]["headers"]["x-mcp-subject"] == ["alice"] and seen[0]["authorization"] is False


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_json_mode_server_forbidden_call_never_arrives(envoy, mcp_json_server, era):
    if era == "modern":
        status, headers, body = tool_call(envoy, "delete_everything", token=ADMIN, path="/json/mcp", id=62)
    else:
        call = {"jsonrpc": "2.0", "id": 62, "method": "tools/call",
                "params": {"name": "delete_everything", "arguments": {}}}
        status, headers, body = envoy.request("POST", "/json/mcp", call, legacy_headers(ADMIN))
    assert_forbidden(status, headers, body, id=62)
    assert mcp_json_server.seen() == []


# ---------------------------------------------------------------------------
# Audit mode


def test_audit_mode_lets_a_forbidden_call_through_and_logs_would_deny(audit_envoy, mcp_server):
    status, headers, body = tool_call(audit_envoy, "delete_everything", token=READER, id=71,
                                      headers={"x-mcp-subject": "admin"})
    assert status == 200, body
    assert result_text(headers, body) == "everything deleted"
    seen = mcp_server.seen()
    assert mcp_server.calls() == [("tools/call", "delete_everything")]
    assert seen[0]["headers"]["x-mcp-subject"] == ["alice"], "audit mode still never trusts client identity headers"
    assert seen[0]["authorization"] is False
    lines = [d for d in decisions(audit_envoy, "would_deny")
             if d.get("method") == "tools/call" and d.get("name") == "delete_everything"]
    assert lines, audit_envoy.logs()[-3000:]
    assert lines[-1]["rule"] == "nobody deletes" and lines[-1]["sub"] == "alice"
    assert lines[-1]["reason"] == "forbidden"


def test_audit_mode_lets_a_scope_shortfall_through_and_logs_it(audit_envoy, mcp_server):
    status, headers, body = tool_call(audit_envoy, "get_weather", {"city": "Nice"}, token=READER_NO_SCOPE)
    assert status == 200, body
    assert "www-authenticate" not in headers
    assert mcp_server.calls() == [("tools/call", "get_weather")]
    assert any(d.get("reason") == "insufficient_scope" and d.get("sub") == "bob"
               for d in decisions(audit_envoy, "would_deny"))


def test_audit_mode_logs_allowed_decisions_too(audit_envoy, mcp_server):
    status, _, body = tool_call(audit_envoy, "get_weather", {"city": "Bern"}, token=READER)
    assert status == 200, body
    assert any(d.get("name") == "get_weather" and d.get("rule") == "readers read"
               for d in decisions(audit_envoy, "allow"))


def test_audit_mode_lets_a_request_without_token_through_and_logs_it(audit_envoy, mcp_server):
    status, headers, body = tool_call(audit_envoy, "get_weather", {"city": "Metz"}, token=None,
                                      headers={"x-mcp-subject": "admin"})
    assert status == 200, body
    seen = mcp_server.seen()
    assert mcp_server.calls() == [("tools/call", "get_weather")]
    assert seen[0]["headers"]["x-mcp-subject"] == [], "no identity, so no identity headers at all"
    assert any(d.get("reason") == "no_token" for d in decisions(audit_envoy, "would_deny"))


def test_audit_log_never_holds_a_token(audit_envoy):
    tool_call(audit_envoy, "set_config", {"key": "k", "value": "v"}, token=READER)
    logs = audit_envoy.logs()
    assert "would_deny" in logs
    for token in TOKENS:
        for part in token.split("."):
            assert part not in logs


# ---------------------------------------------------------------------------
# Last: the enforce Envoy's own log, after everything above ran through it


def test_envoy_log_never_holds_a_token(envoy):
    tool_call(envoy, "delete_everything", token=ADMIN)
    logs = envoy.logs()
    assert '"mcp_authz":"deny"' in logs
    for token in TOKENS:
        for part in token.split("."):
            assert part not in logs
