"""Interop: the filter with software nobody here wrote (README
"Compatibility", whose table this run fills).

- Authorization server: npm `oidc-provider` set up like a Keycloak realm
  (`authorization_server.mjs`): RS256 JWT access tokens for the MCP resource,
  roles in `realm_access.roles`, dynamic client registration, PKCE, client
  credentials, and a headless login for the reader alice and the admin carol.
- MCP server: the official Python SDK's server (`tests/mcp_upstream.py`),
  sessions and SSE answers for handshake-era clients, stateless for
  2026-07-28; it records every request that reaches it.
- Envoy (both tested versions) with the filter in front; the JWKS comes from
  the authorization server through an Envoy cluster, its URL discovered from
  the issuer (no `url` configured).
- Clients, each starting with no token and following the discovery flow from
  the filter's 401: the official Python SDK 2.x (its default 2026-07-28 mode
  and `mode="legacy"`, 2025-11-25), the Python SDK 1.x (`.venvs/mcp1`) and the
  TypeScript SDK (`@modelcontextprotocol/sdk`), each run as a subprocess.

Every "refused" asserts two things: the SDK surfaced an error, and the MCP
server never saw the call. What an SDK cannot do is asserted as what it does
instead, printed, and written to the compatibility matrix
(`tests/interop/COMPATIBILITY.md`, written when both Envoy versions ran).
"""

from dataclasses import dataclass

import pytest

from harness import ENVOY_VERSIONS, free_port
from mcp_upstream import McpUpstream
from stack import (HERE, MATRIX, PY1, AuthorizationServer, InteropEnvoy, client_versions,
                   note_limitation, plugin_config, run_client)

# client kind -> how the matrix names it, and the protocol modes it is run in
CLIENTS = [
    pytest.param(("python-sdk-2", "auto"), id="python-sdk-2-modern"),
    pytest.param(("python-sdk-2", "legacy"), id="python-sdk-2-legacy"),
    pytest.param(("python-sdk-1", None), id="python-sdk-1"),
    pytest.param(("typescript-sdk", None), id="typescript-sdk"),
]
PROTOCOL = {("python-sdk-2", "auto"): "2026-07-28", ("python-sdk-2", "legacy"): "2025-11-25",
            ("python-sdk-1", None): "2025-11-25", ("typescript-sdk", None): "2025-11-25"}

# The matrix's columns.
F_DISCOVERY = "401 discovery, registration, auth code + PKCE"
F_LIST = "filtered `tools/list`"
F_ALLOWED = "allowed call"
F_REFUSED = "refused call surfaced"
F_STEP_UP = "step-up on `insufficient_scope`"
F_CC = "client credentials, scope from the challenge"
F_CC_APP = "client credentials, scope set by the app"

FORBIDDEN = -32003
READER_TOOLS = ["get_weather", "search"]
ADMIN_TOOLS = ["get_weather", "search", "set_config"]


@dataclass
class Stack:
    envoy: InteropEnvoy
    version: str
    resource: str
    metadata_url: str
    auth: AuthorizationServer
    mcp: McpUpstream


@pytest.fixture(scope="module", autouse=True)
def installed():
    """`make test` installs these (`setup-node`, `setup-py1`); never skip for want of them."""
    missing = [what for what, path in [("make setup-node", HERE / "node_modules" / "oidc-provider"),
                                       ("make setup-node", HERE / "node_modules" / "@modelcontextprotocol" / "sdk"),
                                       ("make setup-py1", PY1)] if not path.exists()]
    if missing:
        pytest.fail(f"interop prerequisites missing: run {' and '.join(sorted(set(missing)))}", pytrace=False)


@pytest.fixture(scope="module")
def envoy_ports():
    # Chosen up front: the authorization server knows each Envoy's resource URI.
    return {v: free_port() for v in ENVOY_VERSIONS}


@pytest.fixture(scope="module")
def authorization_server(envoy_ports):
    resources = [f"http://127.0.0.1:{p}/mcp" for p in envoy_ports.values()]
    with AuthorizationServer(free_port(), resources) as server:
        yield server


@pytest.fixture(scope="module")
def mcp_server():
    with McpUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def stack(envoy_version, envoy_ports, authorization_server, mcp_server):
    port = envoy_ports[envoy_version]
    resource = f"http://127.0.0.1:{port}/mcp"
    config = plugin_config(resource, authorization_server.issuer)
    with InteropEnvoy(envoy_version, port, config, mcp_server.port, authorization_server.port) as envoy:
        yield Stack(envoy, envoy_version, resource,
                    f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp",
                    authorization_server, mcp_server)


@pytest.fixture(scope="module", autouse=True)
def compatibility_matrix():
    yield MATRIX
    MATRIX.write_if_complete(ENVOY_VERSIONS)


def run(stack, client, scenarios):
    """Runs the client on the scenarios; returns {name: report}, the
    requests the MCP server saw, and the authorization server's events."""
    kind, mode = client
    for s in scenarios:
        s.setdefault("mode", mode or "auto")
        s.setdefault("issuer", stack.auth.issuer)
    stack.mcp.clear()
    events_before = len(stack.auth.events())
    reports, stderr = run_client(kind, stack.resource, scenarios)
    for name, report in reports.items():
        assert report["fatal"] is None, f"{kind} {name} failed:\n{report['fatal']}\n{stderr[-3000:]}"
    return reports, stack.mcp.seen(), stack.auth.events()[events_before:]


def label(client):
    kind, _ = client
    return client_versions()[kind]


def record(stack, client, flow, result="works", note=None):
    MATRIX.set(label(client), PROTOCOL[client], flow, stack.version, result, note)


def index_of(http, predicate, start=0):
    for i in range(start, len(http)):
        if predicate(http[i]):
            return i
    raise AssertionError(f"expected exchange not found after #{start}:\n" +
                         "\n".join(f"#{i} {h['method']} {h['url']} {h['status']}" for i, h in enumerate(http)))


def assert_discovery_from_401(stack, report, registers=True):
    """The client started with no token and walked the discovery flow
    that the filter's 401 points to, in order."""
    http = report["http"]
    issuer = stack.auth.issuer
    first = http[0]
    assert (first["method"], first["url"], first["status"]) == ("POST", stack.resource, 401)
    assert first["www_authenticate"] == (
        f'Bearer resource_metadata="{stack.metadata_url}", scope="mcp:read mcp:write"')
    i = index_of(http, lambda h: h["method"] == "GET" and h["url"] == stack.metadata_url and h["status"] == 200, 1)
    i = index_of(http, lambda h: h["method"] == "GET" and h["url"].startswith(issuer + "/.well-known/")
                 and h["status"] == 200, i + 1)
    if registers:
        i = index_of(http, lambda h: h["method"] == "POST" and h["url"] == issuer + "/reg" and h["status"] == 201, i + 1)
    i = index_of(http, lambda h: h["method"] == "POST" and h["url"] == issuer + "/token" and h["status"] == 200, i + 1)
    index_of(http, lambda h: h["method"] == "POST" and h["url"] == stack.resource and h["status"] == 200, i + 1)


def assert_refused(client, step, code=FORBIDDEN):
    """The SDK surfaced the filter's refusal as an error; each SDK in its own way."""
    kind, _ = client
    assert step["ok"] is False, step
    error = step["error"]
    if kind == "python-sdk-2":
        assert (error["type"], error["code"]) == ("MCPError", code), error
    elif kind == "typescript-sdk":
        assert (error["type"], error["code"]) == ("StreamableHTTPError", 403), error
        assert f'"code":{code}' in error["message"], error
    else:
        assert (error["type"], error["status"]) == ("HTTPStatusError", 403), error


def refusal_note(client):
    kind, _ = client
    return {
        "python-sdk-2": "the filter's JSON-RPC error, as `MCPError` (code -32003)",
        "typescript-sdk": "`StreamableHTTPError` (HTTP 403; the JSON-RPC error is in its message); the session goes on",
        "python-sdk-1": "`httpx.HTTPStatusError` (403) raised inside the transport's task group: it ends the "
                        "connection and the JSON-RPC error in the body is not read; a new session is needed",
    }[kind]


def assert_reached(seen, calls, identity):
    """What the MCP server saw: the allowed calls; never a token; every
    request with the caller's verified identity."""
    rpc = [(m["method"], m["name"]) for r in seen for m in r["rpc"]]
    for call in calls:
        assert ("tools/call", call) in rpc, rpc
    for r in seen:
        assert r["authorization"] is False, "the token never reaches the MCP server"
        assert r["headers"]["x-mcp-subject"] == [identity], r
    return rpc


def steps(report, kind):
    return [s for s in report["steps"] if s["step"] == kind]


def call_step(report, tool, nth=0):
    return [s for s in report["steps"] if s.get("tool") == tool][nth]


def token_events(events, grant_type):
    return [e for e in events if e["event"] == "token" and e["grant_type"] == grant_type]


@pytest.mark.parametrize("client", CLIENTS)
def test_reader_discovers_lists_calls_and_is_refused(stack, client):
    """Alice (a reader) connects with no token: discovery from the 401,
    registration, authorization code with PKCE and the resource indicator; she
    sees only the tools she may call, her read succeeds, writes and deletes
    are refused before the MCP server."""
    for flow in (F_DISCOVERY, F_LIST, F_ALLOWED, F_REFUSED):
        record(stack, client, flow, "FAILED")
    reports, seen, events = run(stack, client, [{
        "name": "reader", "flow": "authorization_code", "account": "alice",
        "calls": [["get_weather", {"city": "Paris"}], ["search", {"query": "envoy"}],
                  ["set_config", {"key": "mode", "value": "x"}], ["delete_everything", {}]],
    }])
    report = reports["reader"]

    assert_discovery_from_401(stack, report)
    [registered] = [e for e in events if e["event"] == "register"]
    assert registered["client_id"] == report["registered_client_id"]
    [authorize] = [e for e in events if e["event"] == "authorize"]
    assert (authorize["resource"], authorize["code_challenge_method"], authorize["account"]) == (
        stack.resource, "S256", "alice")
    [token] = token_events(events, "authorization_code")
    assert (token["requested_resource"], token["aud"], token["format"]) == (stack.resource, stack.resource, "jwt")
    assert token["scope"] == "mcp:read mcp:write"
    assert report["protocol_version"] == PROTOCOL[client]
    record(stack, client, F_DISCOVERY)

    assert [s["tools"] for s in steps(report, "list_tools")] == [READER_TOOLS, READER_TOOLS]
    record(stack, client, F_LIST)

    assert call_step(report, "get_weather")["result"] == {"is_error": False, "text": "Weather in Paris: sunny, 21 C"}
    assert call_step(report, "search")["result"] == {"is_error": False, "text": "3 results for envoy"}
    rpc = assert_reached(seen, ["get_weather", "search"], "alice")
    for r in seen:  # identity headers set from the real token's claims
        assert r["headers"]["x-mcp-roles"] == ["reader"]
        assert r["headers"]["x-mcp-client-id"] == [report["registered_client_id"]]
        assert r["headers"]["x-mcp-scopes"] == ["mcp:read mcp:write"]
    if PROTOCOL[client] == "2026-07-28":
        # the filter checked the Mcp-Method / Mcp-Name headers against the body
        assert {h["mcp_method"] for h in report["http"] if h["url"] == stack.resource} >= {"tools/list", "tools/call"}
        assert [r["headers"]["mcp-name"] for r in seen if r["rpc"][0]["method"] == "tools/call"] == [
            ["get_weather"], ["search"]]
    record(stack, client, F_ALLOWED)

    assert_refused(client, call_step(report, "set_config"))
    assert_refused(client, call_step(report, "delete_everything"))
    assert ("tools/call", "set_config") not in rpc and ("tools/call", "delete_everything") not in rpc
    stats = stack.envoy.stats()
    assert stats.get("wasmcustom.mcp_authz.denied.forbidden", 0) >= 2
    record(stack, client, F_REFUSED, note=refusal_note(client))
    if client[0] == "python-sdk-1":
        note_limitation(label(client), "a refused call (HTTP 403) ends the 1.x transport's connection "
                        "(httpx.HTTPStatusError in its task group); the test opens a new session per step")


@pytest.mark.parametrize("client", CLIENTS)
def test_admin_steps_up_on_insufficient_scope(stack, client):
    """Carol (an admin) first approves only `mcp:read`: she sees the read
    tools; `set_config` is answered 403 insufficient_scope naming the rule's
    `mcp:write` and the `mcp:read` she holds, without reaching the MCP
    server; the SDK re-authorizes, Carol approves, and the call goes
    through with a token that still reads. Deleting stays refused."""
    record(stack, client, F_STEP_UP, "FAILED")
    kind, _ = client
    reports, seen, events = run(stack, client, [{
        "name": "admin", "flow": "authorization_code", "account": "carol",
        # first authorization: approves mcp:read only; later ones: all requested
        "consents": ["mcp:read", None],
        "calls": [["get_weather", {"city": "Oslo"}], ["set_config", {"key": "mode", "value": "fast"}],
                  ["delete_everything", {}]],
    }])
    report = reports["admin"]
    assert_discovery_from_401(stack, report)

    first, second = token_events(events, "authorization_code")
    assert first["scope"] == "mcp:read"
    assert steps(report, "list_tools")[0]["tools"] == READER_TOOLS, "set_config needs mcp:write: hidden"
    assert call_step(report, "get_weather")["ok"] is True

    challenge = [h for h in report["http"] if h["status"] == 403 and h["url"] == stack.resource]
    assert challenge[0]["www_authenticate"] == (
        f'Bearer error="insufficient_scope", scope="mcp:write mcp:read", '
        f'resource_metadata="{stack.metadata_url}"')
    assert len(report["authorizations"]) == 2
    assert {"mcp:read", "mcp:write"} <= set(report["authorizations"][1]["scope"].split())
    assert set(second["scope"].split()) == {"mcp:read", "mcp:write"} and second["aud"] == stack.resource

    assert call_step(report, "set_config")["result"] == {"is_error": False, "text": "config mode set to fast"}
    rpc = assert_reached(seen, ["get_weather", "set_config"], "carol")
    assert rpc.count(("tools/call", "set_config")) == 1, "the call refused for want of scope never reached the server"
    assert steps(report, "list_tools")[-1]["tools"] == ADMIN_TOOLS

    assert_refused(client, call_step(report, "delete_everything"))
    assert ("tools/call", "delete_everything") not in rpc

    if kind == "python-sdk-2":
        # SEP-2350: the new request is the union of what was granted and what is challenged.
        note = "re-authorizes for the union of granted and challenged scopes"
    else:
        # The challenge names the scopes already held, so asking for the
        # challenged ones alone keeps them.
        assert report["authorizations"][1]["scope"] == "mcp:write mcp:read"
        note = ("re-authorizes for the challenged scopes alone (`mcp:write mcp:read`); the challenge names "
                "the held `mcp:read` too, so the new token keeps it")
    if kind == "typescript-sdk":
        # The SDK leaves the browser round trip to the application: it throws
        # UnauthorizedError; the application calls finishAuth(code) and retries.
        assert report["app_finished_auth"] == 2
        note += "; the application completes each redirect (`UnauthorizedError`, `finishAuth`, retry)"
    record(stack, client, F_STEP_UP, note=note)


@pytest.mark.parametrize("client", CLIENTS)
def test_client_credentials(stack, client):
    """Services with pre-registered confidential clients: the reader service
    lists and reads and is refused a write; the admin service writes and is
    refused a delete. Roles come from the client's registration."""
    kind, _ = client
    flow = F_CC_APP if kind == "typescript-sdk" else F_CC
    record(stack, client, flow, "FAILED")
    extra = {"scope": "mcp:read mcp:write"} if kind == "typescript-sdk" else {}
    reports, seen, events = run(stack, client, [
        {"name": "svc-reader", "flow": "client_credentials", "client_id": "svc-reader",
         "client_secret": "svc-reader-secret", **extra,
         "calls": [["search", {"query": "logs"}], ["set_config", {"key": "a", "value": "b"}]]},
        {"name": "svc-admin", "flow": "client_credentials", "client_id": "svc-admin",
         "client_secret": "svc-admin-secret", **extra,
         "calls": [["set_config", {"key": "a", "value": "b"}], ["delete_everything", {}]]},
    ])
    reader, admin = reports["svc-reader"], reports["svc-admin"]
    for report in (reader, admin):
        assert_discovery_from_401(stack, report, registers=False)
    tokens = token_events(events, "client_credentials")
    assert [(t["client_id"], t["scope"], t["aud"]) for t in tokens] == [
        ("svc-reader", "mcp:read mcp:write", stack.resource), ("svc-admin", "mcp:read mcp:write", stack.resource)]

    assert [s["tools"] for s in steps(reader, "list_tools")] == [READER_TOOLS, READER_TOOLS]
    assert call_step(reader, "search")["result"]["text"] == "3 results for logs"
    assert_refused(client, call_step(reader, "set_config"))
    assert [s["tools"] for s in steps(admin, "list_tools")] == [ADMIN_TOOLS, ADMIN_TOOLS]
    assert call_step(admin, "set_config")["result"]["text"] == "config a set to b"
    assert_refused(client, call_step(admin, "delete_everything"))

    by_subject = {}
    for r in seen:
        assert r["authorization"] is False
        [subject] = r["headers"]["x-mcp-subject"]
        by_subject.setdefault(subject, []).extend((m["method"], m["name"]) for m in r["rpc"])
    assert set(by_subject) == {"svc-reader", "svc-admin"}
    assert ("tools/call", "search") in by_subject["svc-reader"]
    assert ("tools/call", "set_config") not in by_subject["svc-reader"]
    assert ("tools/call", "set_config") in by_subject["svc-admin"]
    assert ("tools/call", "delete_everything") not in by_subject["svc-admin"]
    note = "the SDK's `ClientCredentialsProvider` with `scope` set" if kind == "typescript-sdk" else (
        "the SDK's `ClientCredentialsOAuthProvider`; scopes from the 401's `scope`")
    record(stack, client, flow, note=note)


@pytest.mark.parametrize("client", [p for p in CLIENTS if p.values[0][0] == "typescript-sdk"])
def test_typescript_client_credentials_ignore_the_challenged_scope(stack, client):
    """The TypeScript SDK's client-credentials token request sends only the
    scope the application configured, never the 401's `scope` nor a 403
    challenge's: without one the token has no scope. The filter then does
    its part (an empty tool list, a 403 insufficient_scope naming mcp:read,
    nothing reaches the server); the SDK retries once with the same token
    request and gives up."""
    record(stack, client, F_CC, "FAILED")
    reports, seen, events = run(stack, client, [
        {"name": "svc-reader", "flow": "client_credentials", "client_id": "svc-reader",
         "client_secret": "svc-reader-secret", "calls": [["search", {"query": "logs"}]]},
    ])
    report = reports["svc-reader"]
    assert_discovery_from_401(stack, report, registers=False)
    tokens = token_events(events, "client_credentials")
    assert len(tokens) == 2 and all(t.get("requested_scope") is None and t.get("scope") is None for t in tokens)
    assert steps(report, "list_tools")[0]["tools"] == []
    challenges = [h["www_authenticate"] for h in report["http"] if h["status"] == 403]
    assert challenges == [f'Bearer error="insufficient_scope", scope="mcp:read", resource_metadata="{stack.metadata_url}"'] * 2
    step = call_step(report, "search")
    assert step["ok"] is False and "403 after trying upscoping" in step["error"]["message"]
    assert not any(m["method"] == "tools/call" for r in seen for m in r["rpc"])
    reason = ("its client-credentials token request uses only the scope configured on "
              "`ClientCredentialsProvider`, not the 401 `scope` hint nor the 403 challenge's")
    note_limitation(label(client), reason)
    record(stack, client, F_CC, "not supported", note=reason)
