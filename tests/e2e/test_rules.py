"""README "Configuration reference" (`rules[]`, how rules decide) and
"Request handling" steps 5-6, end to end: allow, deny and the
`insufficient_scope` challenge for tools, prompts and resources; a forbidden
call sent as a notification; batches, which pass only when every element is
allowed. A real Envoy with the built filter in front of the official SDK's
MCP server (`mcp_client.SdkEnvoy`), on both Envoy versions.

The server records every HTTP request that reaches it, before the SDK sees it,
so "refused" always means two things here: the client got the filter's answer,
and the server never saw the call."""

import json

import pytest

from configs import METADATA_URL
from mcp_client import (ADMIN, BATCH_ERA, CLIENT_META, NO_ROLES, READER, READER_NO_SCOPE, SdkEnvoy,
                        assert_forbidden, assert_from_server, assert_refused, legacy_headers, messages,
                        modern_call, modern_headers, raw_post, reply, result_text, tool_call)


@pytest.fixture(scope="module")
def envoy(envoy_version, sdk_servers):
    with SdkEnvoy(envoy_version, sdk_servers) as e:
        yield e


# ---------------------------------------------------------------------------
# Tools


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


def test_forbidden_call_sent_as_notification_is_refused(envoy, mcp_server):
    """Without an id the call is a notification; rules still apply to it."""
    body = {"jsonrpc": "2.0", "method": "tools/call",
            "params": {"name": "delete_everything", "arguments": {}, "_meta": CLIENT_META}}
    status, headers, out = envoy.request("POST", "/mcp", body, modern_headers("tools/call", "delete_everything", ADMIN))
    assert_forbidden(status, headers, out, id=None)
    assert mcp_server.seen() == []


# ---------------------------------------------------------------------------
# Prompts and resources


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
# Batches (2025-03-26): every element is authorized


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
