"""README "Conditions", "Scope hierarchies" and "Request handling" step 5
(`Mcp-Param-*`, the 2026-07-28 routing headers), end to end: a real Envoy
with the built filter in front of the official Python SDK's MCP server
(`mcp_upstream.py --conditions`), called by the official Python SDK's
client in the 2026-07-28 and the legacy protocol, on both Envoy versions.

The server records every request before the SDK sees it: a call "refused"
here got the filter's answer and never reached the server."""

import asyncio
import json

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from configs import ISSUER, base_config, inline_provider
from harness import Envoy
from mcp_client import ACCEPT, CLIENT_META, MODERN, assert_forbidden, assert_refused
from mcp_upstream import McpUpstream
from tokens import RsaKey, claims

KEY = RsaKey("conditions")
MODES = ["2026-07-28", "legacy"]

RULES = [
    {"name": "everyone lists", "effect": "allow",
     "methods": ["initialize", "server/discover", "notifications/*", "ping", "tools/list"]},
    {"name": "clerks move small sums", "effect": "allow", "methods": ["tools/call"], "names": ["transfer"],
     "roles": ["clerk", "treasurer"], "scopes": ["mcp:read"],
     "when": "request.arguments.amount < 100"},
    {"name": "treasurers move large sums", "effect": "allow", "methods": ["tools/call"], "names": ["transfer"],
     "roles": ["treasurer"], "scopes": ["payments:large", "payments:approve"],
     "when": "request.arguments.amount >= 100"},
    {"name": "own tenant only", "effect": "allow", "methods": ["tools/call"], "names": ["query"],
     "roles": ["analyst"], "when": "request.arguments.tenant == token.claims.tenant"},
    {"name": "forecasts", "effect": "allow", "methods": ["tools/call"], "names": ["get_forecast"],
     "roles": ["clerk"]},
    {"name": "writers configure", "effect": "allow", "methods": ["tools/call"], "names": ["set_config"],
     "roles": ["admin"], "scopes": ["mcp:write"]},
    {"name": "senior auditors forecast", "effect": "allow", "methods": ["tools/call"], "names": ["get_forecast"],
     "roles": ["auditor"], "when": "token.claims.level >= 2"},
]
SCOPE_IMPLIES = {"mcp:admin": ["mcp:write", "mcp:read"], "mcp:write": ["mcp:read"]}


def token_for(url, roles, scope="", **extra):
    return KEY.sign(claims(ISSUER, url, sub="carol", roles=roles, scope=scope, ttl=3600, **extra))


@pytest.fixture(scope="module", params=[False, True], ids=["sse-server", "json-server"])
def stack(request, envoy_version):
    with McpUpstream(json_response=request.param, conditions=True) as server:
        def config(port):
            resource = f"http://127.0.0.1:{port}/mcp"
            return base_config([inline_provider(KEY)], RULES, resource=resource,
                               scopes_supported=["mcp:read", "mcp:write", "mcp:admin",
                                                 "payments:large", "payments:approve", "offline_access"],
                               scope_implies=SCOPE_IMPLIES)
        with Envoy(envoy_version, config, server.port) as envoy:
            yield envoy, server, f"http://127.0.0.1:{envoy.port}/mcp"


async def with_client(url, token, mode, work):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20)
    async with http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client:
            await client.list_tools()
            return await work(client)


def run(url, token, mode, work):
    return asyncio.run(with_client(url, token, mode, work))


async def attempt(client, tool, arguments):
    """The tool's text, or the exception the SDK raised for a refusal."""
    try:
        result = await client.call_tool(tool, arguments)
    except Exception as e:  # the SDK surfaces a 403 as an error
        return e
    return " ".join(c.text for c in result.content if hasattr(c, "text"))


def tool_calls(server):
    """(name, arguments) of every tools/call the server received."""
    out = []
    for record in server.seen():
        body = json.loads(record["body"]) if record["body"] else None
        for message in body if isinstance(body, list) else [body]:
            if isinstance(message, dict) and message.get("method") == "tools/call":
                out.append((message["params"]["name"], message["params"].get("arguments")))
    return out


def modern_post(envoy, token, tool, arguments, **headers):
    """A 2026-07-28 `tools/call`, headers as the spec has clients send them
    unless `headers` says otherwise (a value of None drops that header)."""
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": CLIENT_META}}
    sent = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {token}",
            "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    return envoy.request("POST", "/mcp", body, sent)


# ---------------------------------------------------------------------------
# An argument-limited tool


@pytest.mark.parametrize("mode", MODES)
def test_a_clerk_moves_a_small_sum_but_not_a_large_one(stack, mode):
    envoy, server, url = stack
    server.clear()

    async def work(client):
        return await attempt(client, "transfer", {"amount": 40, "to": "bob"}), \
            await attempt(client, "transfer", {"amount": 4000, "to": "mallory"})

    small, large = run(url, token_for(url, ["clerk"], "mcp:read"), mode, work)
    assert small == "transferred 40 to bob"
    assert isinstance(large, Exception), large
    assert tool_calls(server) == [("transfer", {"amount": 40, "to": "bob"})], \
        "only the permitted call reached the server"


def test_outside_the_limit_is_forbidden_without_a_challenge(stack):
    envoy, server, url = stack
    server.clear()
    status, headers, body = modern_post(envoy, token_for(url, ["clerk"], "mcp:read"), "transfer",
                                        {"amount": 4000, "to": "mallory"})
    assert_forbidden(status, headers, body, id=5)
    assert tool_calls(server) == []


def test_a_condition_that_cannot_be_evaluated_refuses_counts_and_keeps_the_arguments_out_of_the_log(stack):
    envoy, server, url = stack
    server.clear()
    before = envoy.counters().get("condition_error", 0)
    status, headers, body = modern_post(envoy, token_for(url, ["clerk"], "mcp:read"), "transfer",
                                        {"amount": "a-secret-amount-7731", "to": "bob"})
    assert_forbidden(status, headers, body, id=5)
    assert tool_calls(server) == []
    assert envoy.counters().get("condition_error", 0) > before
    logs = envoy.logs()
    assert "clerks move small sums" in logs
    assert "a-secret-amount-7731" not in logs


# ---------------------------------------------------------------------------
# A tenant rule: arguments against a token claim


@pytest.mark.parametrize("mode", MODES)
def test_an_analyst_queries_its_own_tenant_only(stack, mode):
    envoy, server, url = stack
    server.clear()

    async def work(client):
        return await attempt(client, "query", {"tenant": "acme", "sql": "select 1"}), \
            await attempt(client, "query", {"tenant": "globex", "sql": "select 2"})

    own, other = run(url, token_for(url, ["analyst"], tenant="acme"), mode, work)
    assert own == "rows of acme for select 1"
    assert isinstance(other, Exception), other
    assert tool_calls(server) == [("query", {"tenant": "acme", "sql": "select 1"})]


def test_a_token_without_the_tenant_claim_is_refused(stack):
    envoy, server, url = stack
    server.clear()
    status, headers, body = modern_post(envoy, token_for(url, ["analyst"]), "query",
                                        {"tenant": "acme", "sql": "select 1"})
    assert_forbidden(status, headers, body, id=5)
    assert tool_calls(server) == []


def test_lists_show_argument_limited_tools_to_whoever_could_call_them(stack):
    _, _, url = stack

    async def names(client):
        return {t.name for t in (await client.list_tools()).tools}

    assert run(url, token_for(url, ["analyst"], tenant="acme"), "2026-07-28", names) == {"query"}
    assert run(url, token_for(url, ["clerk"], "mcp:read"), "2026-07-28", names) == {"transfer", "get_forecast"}
    assert run(url, token_for(url, ["clerk"]), "2026-07-28", names) == {"get_forecast"}, \
        "without mcp:read no transfer rule holds for the caller"


def test_a_condition_that_cannot_be_evaluated_for_a_list_hides_the_item_and_is_counted_and_logged(stack):
    envoy, _, url = stack

    async def names(client):
        return {t.name for t in (await client.list_tools()).tools}

    before = envoy.counters().get("condition_error", 0)
    # No `level` claim: the condition decides no list item for this caller.
    assert run(url, token_for(url, ["auditor"]), "2026-07-28", names) == set()
    assert envoy.counters().get("condition_error", 0) > before
    assert 'the condition of rule "senior auditors forecast" could not be evaluated for 1 listed item' \
        in envoy.logs()
    before = envoy.counters().get("condition_error", 0)
    assert run(url, token_for(url, ["auditor"], level=3), "2026-07-28", names) == {"get_forecast"}
    assert envoy.counters().get("condition_error", 0) == before


# ---------------------------------------------------------------------------
# Step-up: every scope the call needs in one challenge


def challenged_scopes(headers):
    (challenge,) = headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="'), challenge
    return challenge.split('scope="')[1].split('"')[0].split(" ")


@pytest.mark.parametrize("mode", MODES)
def test_a_large_transfer_challenges_for_both_scopes_and_the_retry_succeeds(stack, mode):
    envoy, server, url = stack
    server.clear()
    token = token_for(url, ["treasurer"], "mcp:read")
    status, headers, body = modern_post(envoy, token, "transfer", {"amount": 5000, "to": "supplier"})
    assert_refused(status, headers, body, 403, id=5)
    scopes = challenged_scopes(headers)
    assert scopes == ["payments:large", "payments:approve", "mcp:read"], \
        "the rule's scopes and what the caller already holds, nothing else"
    assert tool_calls(server) == []

    async def work(client):
        return await attempt(client, "transfer", {"amount": 5000, "to": "supplier"}), \
            await attempt(client, "transfer", {"amount": 5, "to": "coffee"})

    large, small = run(url, token_for(url, ["treasurer"], " ".join(scopes)), mode, work)
    assert large == "transferred 5000 to supplier"
    assert small == "transferred 5 to coffee", "the re-authorized token kept what the old one could do"
    assert tool_calls(server) == [("transfer", {"amount": 5000, "to": "supplier"}),
                                  ("transfer", {"amount": 5, "to": "coffee"})]


def test_a_small_transfer_without_scopes_challenges_for_the_small_rule(stack):
    envoy, _, url = stack
    status, headers, body = modern_post(envoy, token_for(url, ["treasurer"], "offline_access"), "transfer",
                                        {"amount": 5, "to": "coffee"})
    assert_refused(status, headers, body, 403, id=5)
    assert challenged_scopes(headers) == ["mcp:read"], "never offline_access"


def test_the_metadata_never_offers_offline_access(stack):
    envoy, _, _ = stack
    status, _, body = envoy.request("GET", "/.well-known/oauth-protected-resource/mcp")
    assert status == 200
    assert json.loads(body)["scopes_supported"] == ["mcp:read", "mcp:write", "mcp:admin",
                                                    "payments:large", "payments:approve"]


# ---------------------------------------------------------------------------
# A broad scope stands in for the narrow ones


@pytest.mark.parametrize("mode", MODES)
def test_a_broad_scope_satisfies_the_narrower_ones(stack, mode):
    envoy, server, url = stack
    server.clear()

    async def work(client):
        names = {t.name for t in (await client.list_tools()).tools}
        return names, await attempt(client, "set_config", {"key": "mode", "value": "fast"})

    names, answer = run(url, token_for(url, ["admin"], "mcp:admin"), mode, work)
    assert "set_config" in names
    assert answer == "config mode set to fast"
    assert tool_calls(server) == [("set_config", {"key": "mode", "value": "fast"})]


def test_without_the_broad_scope_the_narrow_rule_challenges(stack):
    envoy, server, url = stack
    server.clear()
    status, headers, body = modern_post(envoy, token_for(url, ["admin"], "mcp:read"), "set_config",
                                        {"key": "mode", "value": "fast"})
    assert_refused(status, headers, body, 403, id=5)
    assert challenged_scopes(headers) == ["mcp:write", "mcp:read"]
    assert tool_calls(server) == []


# ---------------------------------------------------------------------------
# Mcp-Param-* headers and the 2026-07-28 routing headers


def test_the_sdk_client_mirrors_a_parameter_into_a_header_and_passes(stack):
    envoy, server, url = stack
    server.clear()

    async def work(client):
        return await attempt(client, "get_forecast", {"region": "Nordic", "days": 2}), \
            await attempt(client, "get_forecast", {"region": "Zürich Süd"})

    plain, encoded = run(url, token_for(url, ["clerk"]), "2026-07-28", work)
    assert plain == "forecast for Nordic: 2 days of sun"
    assert encoded == "forecast for Zürich Süd: 3 days of sun"
    calls = [r for r in server.seen() if any(m["method"] == "tools/call" for m in r["rpc"])]
    assert [r["headers"]["mcp-param-region"] for r in calls] == [
        ["Nordic"], ["=?base64?WsO8cmljaCBTw7xk?="]], "the SDK sent the headers, the filter checked them"


def learn_forecast_declarations(url):
    """The filter learns what a tool mirrors from a `tools/list` answer."""
    async def nothing(_client):
        return None
    run(url, token_for(url, ["clerk"]), "2026-07-28", nothing)


@pytest.mark.parametrize("header", ["Sahara", "=?base64?U2FoYXJh?=", "=?base64?not base64?="])
def test_an_mcp_param_header_that_disagrees_with_the_body_is_refused(stack, header):
    envoy, server, url = stack
    learn_forecast_declarations(url)
    server.clear()
    status, headers, body = modern_post(envoy, token_for(url, ["clerk"]), "get_forecast",
                                        {"region": "Nordic"}, Mcp_Param_Region=header)
    assert_refused(status, headers, body, 400, code=-32020, id=5)
    assert tool_calls(server) == []


def test_an_mcp_param_header_in_the_base64_form_that_agrees_passes(stack):
    envoy, server, url = stack
    learn_forecast_declarations(url)
    server.clear()
    status, _, body = modern_post(envoy, token_for(url, ["clerk"]), "get_forecast",
                                  {"region": "Nordic"}, Mcp_Param_Region="=?base64?Tm9yZGlj?=")
    assert status == 200, body
    assert tool_calls(server) == [("get_forecast", {"region": "Nordic"})]


def test_a_2026_request_without_the_mirrored_header_is_refused(stack):
    envoy, server, url = stack
    learn_forecast_declarations(url)
    server.clear()
    status, headers, body = modern_post(envoy, token_for(url, ["clerk"]), "get_forecast", {"region": "Nordic"})
    assert_refused(status, headers, body, 400, code=-32020, id=5)
    assert tool_calls(server) == []


def test_a_legacy_request_with_a_disagreeing_header_is_refused(stack):
    envoy, server, url = stack
    learn_forecast_declarations(url)
    server.clear()
    body = {"jsonrpc": "2.0", "id": 6, "method": "tools/call",
            "params": {"name": "get_forecast", "arguments": {"region": "Nordic"}}}
    status, headers, answer = envoy.request("POST", "/mcp", body, {
        "Content-Type": "application/json", "Accept": ACCEPT, "MCP-Protocol-Version": "2025-11-25",
        "Authorization": f"Bearer {token_for(url, ['clerk'])}", "Mcp-Param-Region": "Sahara"})
    assert_refused(status, headers, answer, 400, code=-32020, id=6)
    assert tool_calls(server) == []


@pytest.mark.parametrize("dropped", ["Mcp-Method", "Mcp-Name"])
def test_a_2026_request_without_its_routing_header_is_refused(stack, dropped):
    envoy, server, url = stack
    server.clear()
    status, headers, body = modern_post(envoy, token_for(url, ["clerk"]), "get_forecast",
                                        {"region": "Nordic"}, Mcp_Param_Region="Nordic", **{dropped: None})
    assert_refused(status, headers, body, 400, code=-32020, id=5)
    assert tool_calls(server) == []
