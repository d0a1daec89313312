"""README "Several servers behind one filter" and "The verified call for the
rest of the chain": the shipped example `envoy/servers/envoy.yaml`, run as
it is in each tested Envoy (only its ports, the .wasm's path and the
issuer's keys changed), in front of two different MCP servers (the official
Python SDK server twice: its own tools at `/github/mcp`, an issue tracker's
at `/jira/mcp`).

- each server's metadata document at its own URI, each 401 pointing at it;
- a token for one server refused at the other (whether or not it was used
  at its own first), per-server rules and list filtering;
- Envoy's local_ratelimit keyed on the tool and caller the filter
  published: the third call of one caller to `expensive_tool` gets 429 with
  a JSON-RPC error body, other tools and other callers go on, and nothing a
  client sends (a published header, an identity header, `Mcp-Name`) moves
  a call into another bucket;
- the access log line names the server, the tool and the caller; Envoy's
  RBAC after the filter refuses by the published call; the route with the
  filter turned off is untouched;
- paths and hosts an outsider would try, to have one server's policy decide
  a request another server's upstream serves: `/github/../jira/mcp`,
  `//github/mcp`, percent-encodings, case, `;` parameters, a spoofed `Host`,
  an absolute-form target, a fragment — none reaches an upstream.
"""

import json
import os
import tempfile

import pytest
import yaml

from configs import ISSUER, inline_provider
from harness import ROOT, WASM, Envoy, free_port, poll, request
from mcp_client import ACCEPT, MODERN, assert_refused, call, modern_headers, post, reply, rpc
from mcp_upstream import McpUpstream
from tokens import RsaKey, claims
from wire import h1_request

EXAMPLE = ROOT / "envoy" / "servers" / "envoy.yaml"
GITHUB = "http://localhost:8080/github/mcp"
JIRA = "http://localhost:8080/jira/mcp"
WELL_KNOWN = "/.well-known/oauth-protected-resource"

KEY = RsaKey("servers-1")


def token(audience, sub="alice", roles=("reader",), scope="mcp:read"):
    return KEY.sign(claims(ISSUER, audience, sub=sub, roles=list(roles), scope=scope, ttl=3600))


class ExampleEnvoy(Envoy):
    """Envoy running a shipped example: its listener and admin ports, the
    .wasm's path, the clusters' ports and the providers replaced, nothing
    else."""

    def __init__(self, version, path, clusters, providers):
        self.version = version
        self.port = free_port()
        self.admin_port = free_port()
        self.concurrency = 1
        self.dir = tempfile.mkdtemp(prefix="mcp-authz-example-")
        self.config_path = os.path.join(self.dir, "envoy.json")
        self.log_path = os.path.join(self.dir, "envoy.log")
        config = yaml.safe_load(path.read_text())
        config["admin"]["address"]["socket_address"]["port_value"] = self.admin_port
        resources = config["static_resources"]
        listener = resources["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = self.port
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for f in hcm["http_filters"]:
            if f["name"] == "envoy.filters.http.wasm":
                wasm = f["typed_config"]["config"]
                wasm["vm_config"]["code"]["local"]["filename"] = str(WASM)
                plugin = json.loads(wasm["configuration"]["value"])
                plugin["providers"] = providers
                wasm["configuration"]["value"] = json.dumps(plugin)
                self.plugin = plugin
        for c in resources["clusters"]:
            if c["name"] in clusters:
                endpoint = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                endpoint["address"]["socket_address"]["port_value"] = clusters[c["name"]]
        with open(self.config_path, "w") as f:
            json.dump(config, f)

    def access_log(self):
        """The example's access log lines (JSON, on Envoy's stdout)."""
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{") and '"mcp_access"' in line:
                out.append(json.loads(line))
        return out


@pytest.fixture(scope="module")
def github():
    with McpUpstream(json_response=True, stateless=True, mount="/github/mcp") as server:
        yield server


@pytest.fixture(scope="module")
def tracker():
    with McpUpstream(json_response=True, stateless=True, tracker=True, mount="/jira/mcp") as server:
        yield server


@pytest.fixture(scope="module")
def example(envoy_version, github, tracker):
    providers = [inline_provider(KEY)]
    with ExampleEnvoy(envoy_version, EXAMPLE, {"github": github.port, "jira": tracker.port}, providers) as envoy:
        yield envoy


@pytest.fixture
def upstreams(github, tracker):
    github.clear()
    tracker.clear()
    return github, tracker


def tools_listed(envoy, path, bearer):
    status, headers, body = post(envoy, rpc("tools/list"), bearer, {"Accept": ACCEPT}, path=path)
    assert status == 200, body[:300]
    return sorted(t["name"] for t in reply(headers, body)["result"]["tools"])


def call_tool(envoy, path, bearer, tool, headers=None, id=1):
    return post(envoy, call(tool, id=id, arguments={}), bearer, {"Accept": ACCEPT, **(headers or {})}, path=path)


# ---------------------------------------------------------------------------
# Two protected resources on one listener

def test_each_server_serves_its_own_metadata_document(example):
    for path, resource in [("/github/mcp", GITHUB), ("/jira/mcp", JIRA)]:
        status, headers, body = request(example.port, "GET", WELL_KNOWN + path)
        assert status == 200, body
        doc = json.loads(body)
        assert doc["resource"] == resource
        assert doc["authorization_servers"] == [ISSUER]
        assert doc["resource_name"] == {"/github/mcp": "GitHub tools", "/jira/mcp": "Issue tracker"}[path]
    # The root URI would name one of two servers for both: no server's.
    status, _, body = request(example.port, "GET", WELL_KNOWN)
    assert status == 404, body


def test_a_bare_401_points_each_client_at_its_servers_metadata(example, upstreams):
    for path in ["/github/mcp", "/jira/mcp"]:
        status, headers, body = post(example, rpc("tools/list"), None, path=path)
        assert status == 401
        challenge = headers["www-authenticate"][0]
        assert f'resource_metadata="http://localhost:8080{WELL_KNOWN}{path}"' in challenge, challenge
    assert upstreams[0].seen() == [] and upstreams[1].seen() == []


def test_a_token_for_one_server_is_refused_at_the_other(example, upstreams):
    github, tracker = upstreams
    for_github, for_jira = token(GITHUB), token(JIRA)
    # Used at its own server first (so the filter knows it verified), then
    # at the other: refused by audience there all the same.
    assert tools_listed(example, "/github/mcp", for_github) == ["get_weather", "search"]
    for bearer, path in [(for_github, "/jira/mcp"), (for_jira, "/github/mcp")]:
        status, headers, body = call_tool(example, path, bearer, "search_issues")
        assert_refused(status, headers, body, 401, code=-32001)
        assert 'error="invalid_token"' in headers["www-authenticate"][0]
        assert "audience" in headers["www-authenticate"][0]
    assert tracker.seen() == []
    assert [r["path"] for r in github.seen()] == ["/github/mcp"]
    counters = example.counters()
    assert counters["invalid_token.audience"] >= 2
    assert counters["server.github.denied"] >= 1 and counters["server.jira.denied"] >= 1
    denials = [d for d in example.decisions("deny") if d["reason"] == "invalid_token"]
    assert {d["server"] for d in denials} >= {"github", "jira"}


def test_each_server_decides_and_filters_lists_by_its_own_rules(example, upstreams):
    github, tracker = upstreams
    reader_github, reader_jira = token(GITHUB), token(JIRA)
    admin_jira = token(JIRA, sub="root", roles=["admin"], scope="mcp:read mcp:write")
    assert tools_listed(example, "/github/mcp", reader_github) == ["get_weather", "search"]
    assert tools_listed(example, "/jira/mcp", reader_jira) == ["expensive_tool", "search_issues"]
    assert tools_listed(example, "/jira/mcp", admin_jira) == [
        "create_issue", "delete_project", "expensive_tool", "search_issues"]
    status, headers, body = call_tool(example, "/jira/mcp", reader_jira, "create_issue")
    assert_refused(status, headers, body, 403, code=-32003, id=1)
    status, _, body = call_tool(example, "/jira/mcp", admin_jira, "create_issue")
    assert status == 200, body
    assert ("tools/call", "create_issue") in tracker.calls()
    assert not any(name == "create_issue" for _, name in github.calls())


# ---------------------------------------------------------------------------
# The verified call for the rest of the chain

def test_a_callers_budget_for_one_tool_runs_out_alone(example, upstreams):
    _, tracker = upstreams
    alice, bob = token(JIRA, sub="alice"), token(JIRA, sub="bob")
    for i in range(2):
        status, _, body = call_tool(example, "/jira/mcp", alice, "expensive_tool", id=i)
        assert status == 200, body
    status, headers, body = call_tool(example, "/jira/mcp", alice, "expensive_tool", id=3)
    assert status == 429, body
    assert headers["content-type"] == ["application/json"]
    assert json.loads(body)["error"]["code"] == -32006
    # Another tool, and another caller, still go on.
    status, _, body = call_tool(example, "/jira/mcp", alice, "search_issues", id=4)
    assert status == 200, body
    status, _, body = call_tool(example, "/jira/mcp", bob, "expensive_tool", id=5)
    assert status == 200, body
    # Nothing alice sends moves her call into another bucket: the published
    # header and identity headers she sends are removed, and the counter is
    # keyed on what the filter read from the body and the token.
    spoofed = [("x-mcp-tool", "search_issues"), ("X_Mcp_Tool", "search_issues"),
               ("x-mcp-subject", "bob"), ("x-mcp-authz-name", "search_issues")]
    status, _, body = post(example, call("expensive_tool", id=6, arguments={}), alice,
                           [("Accept", ACCEPT)] + spoofed, path="/jira/mcp")
    assert status == 429, body
    # Mcp-Name naming another tool: the filter refuses the mismatch itself.
    headers = modern_headers("tools/call", "search_issues", alice)
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "expensive_tool", "arguments": {},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}}
    status, _, answer = example.request("POST", "/jira/mcp", body, headers)
    assert status == 400 and json.loads(answer)["error"]["code"] == -32020, answer
    calls = [r for r in tracker.seen() if r["rpc"] and r["rpc"][0]["name"] == "expensive_tool"]
    assert len(calls) == 3
    # What reached the server is the filter's own header, never a client's.
    assert all(r["headers"]["x-mcp-tool"] == ["expensive_tool"] for r in calls)
    assert all(r["headers"]["x-mcp-subject"] in (["alice"], ["bob"]) for r in calls)
    stats = example.stats("mcp_tools.")
    assert stats["mcp_tools.http_local_rate_limit.rate_limited"] == 2


def test_the_access_log_names_server_tool_and_caller(example, upstreams):
    status, _, body = call_tool(example, "/github/mcp", token(GITHUB, sub="carol"), "get_weather", id=11)
    assert status == 200, body
    status, _, body = call_tool(example, "/github/mcp", token(GITHUB, sub="carol"), "set_config", id=12)
    assert status == 403, body
    # Envoy writes access logs in batches: wait for both lines.
    lines = poll(lambda: [line for line in example.access_log() if line.get("subject") == "carol"][1:] and
                 [line for line in example.access_log() if line.get("subject") == "carol"], 10)
    assert [(line["server"], line["tool"], line["decision"], line["status"]) for line in lines] == [
        ("github", "get_weather", "allow", 200), ("github", "set_config", "deny", 403)]
    assert all(line["method"] == "tools/call" and line["client_id"] == "test-client" for line in lines)


def test_rbac_after_the_filter_refuses_by_the_published_call(example, upstreams):
    github, tracker = upstreams
    admin_jira = token(JIRA, sub="root", roles=["admin"], scope="mcp:read mcp:write")
    status, _, body = call_tool(example, "/jira/mcp", admin_jira, "delete_project")
    assert status == 403 and b"RBAC" in body, body
    assert tracker.seen() == []
    # The same rules let the admin write elsewhere.
    admin_github = token(GITHUB, sub="root", roles=["admin"], scope="mcp:read mcp:write")
    status, _, body = call_tool(example, "/github/mcp", admin_github, "set_config")
    assert status == 200, body


def test_a_route_with_the_filter_turned_off_is_untouched(example, upstreams):
    before = example.counters()
    status, _, body = request(example.port, "GET", "/static/index.html")
    assert (status, body) == (200, b"static content\n")
    assert example.counters() == before
    # Elsewhere, a request no server takes is refused.
    status, headers, body = post(example, rpc("tools/list"), token(GITHUB), path="/gitlab/mcp")
    assert_refused(status, headers, body, 404, code=-32600)
    assert example.counters()["denied.no_server"] >= 1


# ---------------------------------------------------------------------------
# An outsider with the README and a real Envoy: one server's policy, another
# server's upstream

# Each is decided under github's policy if read as sent, and served as
# jira's if an upstream read it leniently (or the other way round).
LOOK_ALIKES = [
    "/github/../jira/mcp",
    "/github/%2e%2e/jira/mcp",
    "/github/%252e%252e/jira/mcp",
    "/github/..%2Fjira/mcp",
    "/github\\..\\jira/mcp",
    "//jira/mcp",
    "/JIRA/mcp",
    "/Jira/mcp",
    "/%6Aira/mcp",
    "/jira%2Fmcp",
    "/jira;x=1/mcp",
    "/jira/mcp/../../github/mcp",
]


@pytest.mark.parametrize("path", LOOK_ALIKES)
def test_a_look_alike_path_reaches_no_upstream(example, upstreams, path):
    github, tracker = upstreams
    status, headers, body = raw_request(example.port, "POST", path, token(GITHUB),
                                        json.dumps(call("search_issues", arguments={})))
    assert status == 400, (status, body)
    if body.startswith(b"{"):
        assert json.loads(body)["error"]["code"] == -32600
    assert github.seen() == [] and tracker.seen() == []


def test_a_query_or_a_trailing_slash_changes_no_server(example, upstreams):
    github, _ = upstreams
    reader = token(GITHUB)
    status, _, body = post(example, call("get_weather", arguments={"city": "Oslo"}), reader,
                           {"Accept": ACCEPT}, path="/github/mcp?x=/../jira/mcp")
    assert status == 200, body
    # The token is jira's, the query names github: jira decides (and refuses).
    status, _, _ = post(example, call("search_issues", arguments={}), reader, {"Accept": ACCEPT},
                        path="/jira/mcp?next=/github/mcp")
    assert status == 401


def test_a_spoofed_host_neither_picks_the_server_nor_makes_the_urls(example, upstreams):
    github, tracker = upstreams
    headers = {"Host": "evil.example", "Content-Type": "application/json", "Accept": ACCEPT}
    status, answer_headers, _ = example.request("POST", "/jira/mcp", rpc("tools/list"), headers)
    assert status == 401
    assert "evil.example" not in answer_headers["www-authenticate"][0]
    assert f'resource_metadata="http://localhost:8080{WELL_KNOWN}/jira/mcp"' in answer_headers["www-authenticate"][0]
    status, _, body = example.request("GET", WELL_KNOWN + "/jira/mcp", headers={"Host": "evil.example"})
    assert json.loads(body)["resource"] == JIRA
    # The github token at jira under any Host: refused by audience.
    headers["Authorization"] = f"Bearer {token(GITHUB)}"
    status, _, _ = example.request("POST", "/jira/mcp", call("search_issues", arguments={}), headers)
    assert status == 401
    assert tracker.seen() == [] and github.seen() == []


def test_an_absolute_form_target_is_matched_by_its_path(example, upstreams):
    github, tracker = upstreams
    body = json.dumps(call("search_issues", arguments={}))
    # The URL's path is jira's, the Host header github's: the path decides,
    # and the github token is refused there.
    status, headers, answer = raw_request(example.port, "POST", "http://localhost:8080/jira/mcp", token(GITHUB),
                                          body, host="github.example")
    assert status == 401, answer
    assert "github.example" not in headers.get("www-authenticate", [""])[0]
    status, _, answer = raw_request(example.port, "POST", "http://github.example/jira/../github/mcp",
                                    token(GITHUB), body)
    assert status == 400, answer
    assert github.seen() == [] and tracker.seen() == []


def test_a_fragment_never_hides_a_path(example, upstreams):
    github, tracker = upstreams
    status, _, _ = raw_request(example.port, "POST", "/github/mcp#/../../jira/mcp", token(GITHUB),
                               json.dumps(call("search_issues", arguments={})))
    assert status in (400, 403), status
    assert tracker.seen() == []


def raw_request(port, method, target, bearer, body, host="localhost:8080"):
    """One HTTP/1.1 request written byte for byte (the target as given, no
    client-side normalisation); returns (status, headers, body)."""
    headers = [("Content-Type", "application/json"), ("Accept", ACCEPT), ("Authorization", f"Bearer {bearer}")]
    return tuple(h1_request(port, method, target, headers, body, host=host))

