"""List requests and items at the edges (README "List filtering").
Real Envoy, both versions, over HTTP/1.1 and HTTP/2 towards the filter, in
front of a scripted upstream (HTTP/1.1 or HTTP/2) answering as each test
says.

1. A list asked for without an `id` (JSON-RPC's notification form, which
   MCP does not define for lists) is refused with 400 and never forwarded:
   an upstream that answered it anyway would send a list no id ties to the
   request, so nothing could filter it.

2. `resources/list` items whose URI is not in normal form (`SECRET://keys`,
   `docs://a/../secret`, ` secret://keys`, `docs://%73ecret`) are removed:
   the filter refuses a `resources/read` of each of them, and a server
   normalising them would read the denied `secret://keys` /
   `docs://secret`."""

import json

import pytest

from configs import ISSUER, RESOURCE, TOOL_RULES, base_config, inline_provider
from harness import Envoy
from tokens import RsaKey, claims
from wire import Script, ScriptedUpstream, send

KEY = RsaKey("attack15-k1")
READER = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], scope="mcp:read", ttl=3600))
TOOLS = ["get_weather", "search", "set_config", "delete_everything"]

RESOURCE_RULES = [
    {"name": "everyone lists", "effect": "allow", "methods": ["initialize", "ping", "resources/list"]},
    {"name": "read", "effect": "allow", "methods": ["resources/read"], "names": ["*"]},
    {"name": "no secrets", "effect": "deny", "methods": ["resources/read"],
     "names": ["secret://*", "docs://secret*"]},
]
# URIs a server may read as `secret://keys` or `docs://secret` (README
# "Request handling", step 5), each refused by the filter in a
# `resources/read`.
NON_NORMAL_URIS = ["SECRET://keys", "docs://a/../secret", " secret://keys", "docs://%73ecret"]

TRANSPORTS = ["h1", "h2"]


def stack_for(envoy_version, upstream_kind, rules):
    upstream = ScriptedUpstream(http2=upstream_kind == "h2-upstream")
    envoy = Envoy(envoy_version, base_config([inline_provider(KEY)], rules, max_body_bytes=1 << 20),
                  upstream.port, trailers_listener=True, upstream_http2=upstream_kind == "h2-upstream")
    return envoy, upstream


def running_stack(request, envoy_version, rules):
    envoy, upstream = stack_for(envoy_version, request.param, rules)
    try:
        with envoy:
            yield envoy, upstream
    finally:
        upstream.close()


@pytest.fixture(scope="module", params=["h1-upstream", "h2-upstream"])
def tool_stack(request, envoy_version):
    yield from running_stack(request, envoy_version, TOOL_RULES)


@pytest.fixture(scope="module", params=["h1-upstream", "h2-upstream"])
def resource_stack(request, envoy_version):
    yield from running_stack(request, envoy_version, RESOURCE_RULES)


def post(envoy, transport, body, token=READER):
    headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream"),
               ("authorization", f"Bearer {token}")]
    return send(transport, envoy, "POST", "/mcp", headers, body)


def tool_list_answer(id=1):
    return json.dumps({"jsonrpc": "2.0", "id": id,
                       "result": {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in TOOLS]}})


# --- 1: a list request without an id ------------------------------------------------

ID_LESS = {
    "notification": '{"jsonrpc":"2.0","method":"tools/list"}',
    "notification-with-params": '{"jsonrpc":"2.0","method":"tools/list","params":{}}',
    "batch-of-notification-and-ping": '[{"jsonrpc":"2.0","method":"tools/list"},'
                                      '{"jsonrpc":"2.0","id":2,"method":"ping"}]',
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", ["json", "sse", "json-batch"])
@pytest.mark.parametrize("request_kind", list(ID_LESS))
def test_a_list_request_without_an_id_is_refused(tool_stack, transport, shape, request_kind):
    """Refused before the upstream sees it, whatever the upstream would have
    answered with."""
    envoy, upstream = tool_stack
    forwarded = len(upstream.requests)
    answer = tool_list_answer()
    if shape == "sse":
        upstream.script = Script(headers=[("content-type", "text/event-stream")],
                                 chunks=[f"event: message\ndata: {answer}\n\n"])
    else:
        upstream.script = Script(headers=[("content-type", "application/json")],
                                 chunks=[f"[{answer}]" if shape == "json-batch" else answer])
    reply = post(envoy, transport, ID_LESS[request_kind])
    assert reply.status == 400, (reply.status, reply.body)
    assert json.loads(reply.body)["error"]["code"] == -32600
    assert b"delete_everything" not in reply.body
    assert len(upstream.requests) == forwarded, "never forwarded"


# --- 2: resources whose URI is not in normal form -------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_resources_the_caller_may_not_read_are_not_listed(resource_stack, transport):
    envoy, upstream = resource_stack
    # Each of these is refused by the filter in a resources/read: the caller
    # may not read it.
    for uri in NON_NORMAL_URIS:
        upstream.script = Script(headers=[("content-type", "application/json")],
                                 chunks=['{"jsonrpc":"2.0","id":1,"result":{"contents":[]}}'])
        read = post(envoy, transport, json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}}))
        assert read.status == 400, (uri, read.status, read.body)
    resources = [{"uri": "docs://ok", "name": "ok"}] + [
        {"uri": uri, "name": f"secret-{i}", "description": "the signing keys"}
        for i, uri in enumerate(NON_NORMAL_URIS)]
    upstream.script = Script(headers=[("content-type", "application/json")], chunks=[json.dumps(
        {"jsonrpc": "2.0", "id": 1, "result": {"resources": resources}})])
    reply = post(envoy, transport, '{"jsonrpc":"2.0","id":1,"method":"resources/list"}')
    assert reply.status == 200, reply.body
    listed = [r["uri"] for r in json.loads(reply.body)["result"]["resources"]]
    assert listed == ["docs://ok"], listed
    assert b"the signing keys" not in reply.body
