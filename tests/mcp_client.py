"""The end-to-end tests as an MCP client: the requests they send to the
filter and how they read and check its answers.

- `post` is how every test POSTs a JSON-RPC body to the MCP endpoint, over
  HTTP/1.1 by `http.client` or over any of `wire.TRANSPORTS`; `rpc`, `call`
  and `LIST` are the bodies, `client_headers` the headers of a request
  sent with `wire` directly.
- `modern_call`, `tool_call`, `raw_post`, `routing_headers` and
  `legacy_headers` send what a 2026-07-28 or a 2025 client sends to the official SDK's MCP server
  (`mcp_upstream.py`) behind Envoy: `SdkEnvoy` runs that stack with the
  policy over the server's tools, prompts and resources (`SDK_RULES`), and
  `READER`, `READER_NO_SCOPE`, `ADMIN`, `NO_ROLES` are its callers.
- `messages`, `reply` and `result_text` read an answer; `assert_refused`,
  `assert_forbidden`, `assert_invalid_token` and `assert_keys_unavailable`
  check that the filter refused, `assert_allowed` (a `RecordingUpstream`
  got the request) and `assert_from_server` that it did not, and
  `assert_no_token` / `assert_log_holds_no_token` that no part of a token
  shows.
"""

import http.client
import json

from configs import ISSUER, METADATA_URL, RESOURCE, SCOPES, TOOL_RULES, base_config, inline_provider
from harness import Envoy, cluster, request
from tokens import RsaKey, claims
from wire import send, sse_messages

ACCEPT = "application/json, text/event-stream"


# ---------------------------------------------------------------------------
# Requests

def rpc(method, id=1, **params):
    """A JSON-RPC request; without `params`, no `params` member."""
    message = {"jsonrpc": "2.0", "id": id, "method": method}
    if params:
        message["params"] = params
    return message


def call(tool, id=1, **params):
    """A `tools/call` request for `tool`, with `params` (e.g. `arguments`)."""
    return rpc("tools/call", id, name=tool, **params)


LIST = rpc("tools/list")


def post(envoy, body, token=None, headers=None, content_type="application/json", path="/mcp", timeout=10,
         transport=None):
    """POSTs `body` (a dict or list sent as JSON, str or bytes sent as they
    are) to the MCP endpoint with `Content-Type: <content_type>` (None: no
    such header), `Authorization: Bearer <token>` when `token`, then
    `headers`: a dict (whose names replace those) or (name, value) pairs
    (added; a name may repeat). Over `http.client`, or over `transport`
    (`wire.TRANSPORTS`, to an Envoy with `trailers_listener=True`). Returns
    (status, headers, body) like `harness.request`."""
    first = []
    if content_type:
        first.append(("Content-Type", content_type))
    if token:
        first.append(("Authorization", f"Bearer {token}"))
    if isinstance(headers, (list, tuple)):
        sent = first + list(headers)
    else:
        sent = {**dict(first), **(headers or {})}
    if transport:
        return tuple(send(transport, envoy, "POST", path, sent, body, timeout=timeout))
    return request(envoy.port, "POST", path, body, sent, timeout)


# ---------------------------------------------------------------------------
# The SDK's MCP server behind Envoy

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
BATCH_ERA = "2025-03-26"

KEY = RsaKey("k1")
MAX_BODY = 4096

# The interop tests' policy over the SDK server's tools (everyone lists;
# readers with mcp:read call get_* and search; admins with mcp:write call
# anything; nobody deletes), and a prompt and the docs for readers.
SDK_RULES = TOOL_RULES + [
    {"name": "readers prompt", "effect": "allow", "methods": ["prompts/get"],
     "names": ["summary"], "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
    {"name": "readers read docs", "effect": "allow", "methods": ["resources/read"],
     "names": ["docs://*"], "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
]


def sdk_config(**overrides):
    return base_config([inline_provider(KEY)], SDK_RULES, scopes_supported=SCOPES,
                       identity_headers={"x-mcp-subject": "sub", "x-mcp-roles": "$roles"},
                       max_body_bytes=MAX_BODY) | overrides


def mint(sub, roles, scope):
    return KEY.sign(claims(ISSUER, RESOURCE, sub=sub, roles=roles, scope=scope, ttl=3600))


READER = mint("alice", ["reader"], "mcp:read")
READER_NO_SCOPE = mint("bob", ["reader"], "")
ADMIN = mint("root", ["admin"], "mcp:read mcp:write")
NO_ROLES = mint("eve", [], "mcp:read mcp:write")
TOKENS = [READER, READER_NO_SCOPE, ADMIN, NO_ROLES]


class SdkEnvoy(Envoy):
    """Envoy with the filter (`sdk_config(**overrides)`) in front of the
    SDK's servers `(default, json_mode)`: `/json/...` goes to the
    JSON-response, stateless one with the prefix rewritten, everything else
    to the default one (sessions for handshake-era requests, SSE answers).
    2026-07-28 requests (the SDK's default protocol) are stateless in both."""

    def __init__(self, version, servers, **overrides):
        default, json_mode = servers
        super().__init__(version, sdk_config(**overrides), default.port,
                         clusters=[cluster("mcp_json", json_mode.port)],
                         routes=[{"match": {"prefix": "/json/"},
                                  "route": {"cluster": "mcp_json", "prefix_rewrite": "/", "timeout": "30s"}}])


CLIENT_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcp-authz-e2e", "version": "1.0"},
}
META_JSON = json.dumps(CLIENT_META)
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
    """POSTs `body` (bytes or str exactly as given, a dict or list as JSON)
    as a client that accepts JSON and event streams; `headers` as `post`
    takes them."""
    if isinstance(headers, (list, tuple)):
        return post(envoy, body, token, [("Accept", ACCEPT), *headers], path=path)
    return post(envoy, body, token, {"Accept": ACCEPT, **(headers or {})}, path=path)


def client_headers(token):
    """The headers of a client's POST as (name, value) pairs, for `wire`'s
    requests: JSON, the answers it accepts, and `Authorization: Bearer
    <token>` when `token`."""
    headers = [("content-type", "application/json"), ("accept", ACCEPT)]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    return headers


def routing_headers(body):
    """What a 2026-07-28 client adds to a POST of `body` (a JSON-RPC
    request, as a dict): the protocol version, `Mcp-Method`, and `Mcp-Name`
    for a call that names something."""
    headers = [("MCP-Protocol-Version", MODERN), ("Mcp-Method", body["method"])]
    field = NAME_FIELD.get(body["method"])
    if field and field in body.get("params", {}):
        headers.append(("Mcp-Name", body["params"][field]))
    return headers


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


def initialize(version=LEGACY):
    """The `initialize` request of a handshake-era client."""
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "mcp-authz-e2e", "version": "1.0"}}}


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


# ---------------------------------------------------------------------------
# Answers

# The filter's own JSON-RPC error codes (src/answer.rs): an answer carrying
# one of these came from the filter, not from the server.
FILTER_CODES = {-32700, -32600, -32020, -32001, -32002, -32003, -32004, -32005}


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


def assert_no_token(headers, body, tokens=TOKENS):
    blob = body + json.dumps(headers).encode()
    for token in tokens:
        assert token.encode() not in blob, "an answer echoed the token"
        # The signature alone is enough to replay nothing, but the payload
        # carries claims: neither part may appear.
        for part in token.split("."):
            assert part.encode() not in blob


def assert_log_holds_no_token(envoy, tokens):
    """No part of any of `tokens` (header, claims, signature) is anywhere
    in Envoy's log."""
    logs = envoy.logs()
    for token in tokens:
        for part in token.split("."):
            assert part not in logs


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


def assert_allowed(result, upstream, body=LIST):
    """200, and `body` reached the `RecordingUpstream` at `/mcp`, alone."""
    status, _, answer = result
    assert status == 200, answer
    assert len(upstream.requests) == 1 and upstream.requests[0]["path"] == "/mcp", upstream.requests
    assert json.loads(upstream.requests[0]["body"]) == body


def assert_invalid_token(result, upstream, description, secret=None):
    """401 `invalid_token` with `description`, for a configuration with
    `scopes_supported: SCOPES`; no part of `secret` echoed; nothing reached
    the `RecordingUpstream`."""
    status, headers, body = result
    assert status == 401, (status, body)
    challenge = headers["www-authenticate"]
    assert challenge == [
        f'Bearer error="invalid_token", error_description="{description}", '
        f'resource_metadata="{METADATA_URL}", scope="mcp:read mcp:write"'], challenge
    err = json.loads(body)
    assert err["error"]["code"] == -32001
    if secret:
        for part in [secret] + secret.split("."):
            if len(part) >= 8:
                assert part.encode() not in body, "the token is never echoed"
                assert all(part not in v for vs in headers.values() for v in vs)
    assert upstream.requests == [], "a refused request never reaches the upstream"


def assert_keys_unavailable(result, upstream):
    status, headers, body = result
    assert status == 503, (status, body)
    assert headers.get("retry-after"), headers
    assert int(headers["retry-after"][0]) > 0
    assert json.loads(body)["error"]["code"] == -32002
    assert upstream.requests == []
