"""Interop, README "Several servers behind one filter": two MCP servers (the
official Python SDK server twice, different tools) behind one Envoy
listener, each its own protected resource, against a real authorization
server (npm `oidc-provider`, which issues each token for the resource the
client names) and the official Python SDK's client, on both Envoy versions.

- the SDK client starts with no token at each server's URL and follows the
  discovery flow from that server's bare 401: its own metadata document,
  a token for its own resource, then lists and calls by that server's rules;
- a token the authorization server issued for one server is refused at the
  other (and still works at its own).
"""

import base64
import json
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest

from configs import SCOPES, TOOL_RULES
from harness import ENVOY_VERSIONS, cluster, free_port
from mcp_client import modern_call, reply
from mcp_upstream import McpUpstream
from stack import AuthorizationServer, InteropEnvoy, run_client

TRACKER_RULES = [
    {"name": "everyone lists", "effect": "allow",
     "methods": ["initialize", "server/discover", "notifications/*", "ping", "tools/list"]},
    {"name": "readers search", "effect": "allow", "methods": ["tools/call"],
     "names": ["search_issues", "expensive_tool"], "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
    {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"],
     "roles": ["admin"], "scopes": ["mcp:write"]},
]


def urls(port):
    base = f"http://127.0.0.1:{port}"
    return {"github": f"{base}/github/mcp", "jira": f"{base}/jira/mcp"}


def plugin_config(port, issuer):
    server = lambda name, rules: {  # noqa: E731
        "name": name, "match": {"path_prefix": f"/{name}"}, "resource": urls(port)[name],
        "authorization_servers": [issuer], "scopes_supported": SCOPES, "rules": rules,
        "identity_headers": {"x-mcp-subject": "sub"},
    }
    return {
        "providers": [{"issuer": issuer, "jwks": {"remote": {"cluster": "idp", "timeout_ms": 2000}},
                       "algorithms": ["RS256"], "roles_claims": ["realm_access.roles"]}],
        "servers": [server("github", TOOL_RULES), server("jira", TRACKER_RULES)],
    }


@dataclass
class Stack:
    envoy: InteropEnvoy
    urls: dict
    auth: AuthorizationServer
    servers: dict


@pytest.fixture(scope="module")
def envoy_ports():
    return {v: free_port() for v in ENVOY_VERSIONS}


@pytest.fixture(scope="module")
def authorization_server(envoy_ports):
    resources = [u for p in envoy_ports.values() for u in urls(p).values()]
    with AuthorizationServer(free_port(), resources) as server:
        yield server


@pytest.fixture(scope="module")
def github():
    with McpUpstream(mount="/github/mcp") as server:
        yield server


@pytest.fixture(scope="module")
def tracker():
    with McpUpstream(tracker=True, mount="/jira/mcp") as server:
        yield server


@pytest.fixture(scope="module")
def stack(envoy_version, envoy_ports, authorization_server, github, tracker):
    port = envoy_ports[envoy_version]
    config = plugin_config(port, authorization_server.issuer)
    routes = [{"match": {"path_separated_prefix": "/jira"}, "route": {"cluster": "jira", "timeout": "30s"}}]
    with InteropEnvoy(envoy_version, port, config, github.port, authorization_server.port,
                      clusters=[cluster("jira", tracker.port)], routes=routes) as envoy:
        yield Stack(envoy, urls(port), authorization_server, {"github": github, "jira": tracker})


def metadata_url(url):
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}/.well-known/oauth-protected-resource/{path}"


@pytest.mark.parametrize("name,calls,listed,refused", [
    ("github", [["get_weather", {"city": "Oslo"}]], ["get_weather", "search"], ["set_config", {"key": "k", "value": "v"}]),
    ("jira", [["search_issues", {"query": "envoy"}]], ["expensive_tool", "search_issues"], ["create_issue", {"title": "x"}]),
])
def test_the_sdk_client_discovers_each_server_from_its_bare_401(stack, name, calls, listed, refused):
    url, server = stack.urls[name], stack.servers[name]
    server.clear()
    events_before = len(stack.auth.events())
    reports, stderr = run_client("python-sdk-2", url, [{
        "name": name, "flow": "authorization_code", "account": "alice", "mode": "auto",
        "issuer": stack.auth.issuer, "calls": calls + [refused],
    }])
    report = reports[name]
    assert report["fatal"] is None, f"{report['fatal']}\n{stderr[-3000:]}"
    http = report["http"]
    first = http[0]
    assert (first["method"], first["url"], first["status"]) == ("POST", url, 401)
    assert first["www_authenticate"] == f'Bearer resource_metadata="{metadata_url(url)}", scope="mcp:read mcp:write"'
    assert any(h["method"] == "GET" and h["url"] == metadata_url(url) and h["status"] == 200 for h in http)
    # The token was asked for, and issued for, this server's resource.
    [token] = [e for e in stack.auth.events()[events_before:]
               if e["event"] == "token" and e["grant_type"] == "authorization_code"]
    assert (token["requested_resource"], token["aud"]) == (url, url)
    lists = [s["tools"] for s in report["steps"] if s["step"] == "list_tools"]
    assert lists == [listed, listed]
    for tool, _ in calls:
        step = [s for s in report["steps"] if s.get("tool") == tool][0]
        assert step["ok"] is True, step
    step = [s for s in report["steps"] if s.get("tool") == refused[0]][0]
    assert step["ok"] is False and step["error"]["code"] == -32003, step
    seen = [(m["method"], m["name"]) for r in server.seen() for m in r["rpc"]]
    assert ("tools/call", calls[0][0]) in seen and ("tools/call", refused[0]) not in seen
    assert all(r["headers"]["x-mcp-subject"] == ["alice"] for r in server.seen())


def client_credentials(stack, resource):
    """A token the authorization server issues `svc-reader` for `resource`."""
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "resource": resource,
                                   "scope": "mcp:read"}).encode()
    basic = base64.b64encode(b"svc-reader:svc-reader-secret").decode()
    req = urllib.request.Request(stack.auth.issuer + "/token", data=form, method="POST", headers={
        "authorization": f"Basic {basic}", "content-type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())["access_token"]


def test_a_token_issued_for_one_server_is_refused_at_the_other(stack):
    for own, other in [("github", "jira"), ("jira", "github")]:
        token = client_credentials(stack, stack.urls[own])
        stack.servers[other].clear()
        path = lambda name: "/" + stack.urls[name].split("/", 3)[3]  # noqa: E731
        status, headers, body = modern_call(stack.envoy, "tools/list", token=token, path=path(own))
        assert status == 200, body
        assert reply(headers, body)["result"]["tools"]
        status, headers, _ = modern_call(stack.envoy, "tools/call", {"name": "search", "arguments": {}},
                                         token=token, path=path(other))
        assert status == 401
        assert 'error="invalid_token"' in headers["www-authenticate"][0]
        assert metadata_url(stack.urls[other]) in headers["www-authenticate"][0]
        assert stack.servers[other].seen() == []
