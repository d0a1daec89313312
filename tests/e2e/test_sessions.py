"""README "Request handling" steps 3 and 5 across protocol eras, end to
end: 2026-07-28 requests (stateless), a 2025-11-25 session from
`initialize` to `DELETE` (a session id is no authentication), `GET` and
`DELETE` on the MCP endpoint, a POSTed JSON-RPC response (which needs no
rule, but a token), and the SDK server in its JSON-response, stateless
shape. A real Envoy with the built filter in front of the official SDK's
MCP server in both shapes (`mcp_client.SdkEnvoy`), on both Envoy versions."""

import pytest

from configs import METADATA_URL
from mcp_client import (ACCEPT, ADMIN, LEGACY, MODERN, NO_ROLES, READER, SdkEnvoy, assert_forbidden,
                        assert_refused, initialize, legacy_headers, modern_call, open_stream, raw_post, reply,
                        result_text, tool_call)


@pytest.fixture(scope="module")
def envoy(envoy_version, sdk_servers):
    with SdkEnvoy(envoy_version, sdk_servers) as e:
        yield e


# ---------------------------------------------------------------------------
# Protocol eras and sessions


def test_2026_server_discover_is_allowed_and_answered_by_the_server(envoy, mcp_server):
    status, headers, body = modern_call(envoy, "server/discover", token=NO_ROLES, id=51)
    assert status == 200, body
    result = reply(headers, body)["result"]
    assert MODERN in result["supportedVersions"]
    assert "tools" in result["capabilities"]
    assert mcp_server.calls() == [("server/discover", None)]


def test_legacy_session_works_end_to_end(envoy, mcp_server):
    """2025-11-25: initialize → notifications/initialized → tools/list →
    tools/call in a session; a forbidden call in the session is refused;
    the standalone GET stream opens; DELETE ends the session."""
    h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {READER}"}
    status, headers, body = envoy.request("POST", "/mcp", initialize(), h)
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
    status, headers, body = envoy.request("POST", "/mcp", initialize(), legacy_headers(ADMIN))
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
