"""README "Request handling" step 5: the `Mcp-Method` / `Mcp-Name` headers
of 2026-07-28 must equal the body's method and name (after decoding the
`=?base64?...?=` form), else 400 with -32020; a repeated one is refused
too. A real Envoy with the built filter in front of the official SDK's MCP
server (`mcp_client.SdkEnvoy`), on both Envoy versions."""

import base64
import json

import pytest

from mcp_client import (ADMIN, CLIENT_META, SdkEnvoy, assert_refused, modern_headers, reply, result_text,
                        tool_call)


@pytest.fixture(scope="module")
def envoy(envoy_version, sdk_servers):
    with SdkEnvoy(envoy_version, sdk_servers) as e:
        yield e


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
    status, headers, out = envoy.request("POST", "/mcp", body, list(h.items()) + [(header, v) for v in values])
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
