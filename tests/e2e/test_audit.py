"""README "Configuration reference", `mode: "audit"`: decide, log and count,
but let everything through; and its part of "Observability": one decision
line per request (`would_deny` for what enforce mode would refuse, `allow`
too), the `audit_would_deny` counter, and never a token in the log. A real
Envoy with the built filter in front of the official SDK's MCP server
(`mcp_client.SdkEnvoy`), on both Envoy versions."""

import pytest

from harness import poll
from mcp_client import (READER, READER_NO_SCOPE, TOKENS, SdkEnvoy, assert_log_holds_no_token, result_text,
                        tool_call)


@pytest.fixture(scope="module")
def audit_envoy(envoy_version, sdk_servers):
    with SdkEnvoy(envoy_version, sdk_servers, mode="audit") as e:
        yield e


def audited(envoy, send):
    """Runs `send()`. Returns its answer, the decision lines logged since
    (once there is one, within 5 s) and how far `audit_would_deny` moved."""
    lines = len(envoy.decisions())
    would_deny = envoy.counters().get("audit_would_deny", 0)
    answer = send()
    poll(lambda: len(envoy.decisions()) > lines, 5)
    return answer, envoy.decisions()[lines:], envoy.counters()["audit_would_deny"] - would_deny


def test_audit_mode_lets_a_forbidden_call_through_and_logs_would_deny(audit_envoy, mcp_server):
    (status, headers, body), lines, would_deny = audited(audit_envoy, lambda: tool_call(
        audit_envoy, "delete_everything", token=READER, id=71, headers={"x-mcp-subject": "admin"}))
    assert status == 200, body
    assert result_text(headers, body) == "everything deleted"
    seen = mcp_server.seen()
    assert mcp_server.calls() == [("tools/call", "delete_everything")]
    assert seen[0]["headers"]["x-mcp-subject"] == ["alice"], "audit mode still never trusts client identity headers"
    assert seen[0]["authorization"] is False
    assert len(lines) == 1, (lines, audit_envoy.logs()[-3000:])
    [line] = lines
    assert line["mcp_authz"] == "would_deny"
    assert line["method"] == "tools/call" and line["name"] == "delete_everything"
    assert line["rule"] == "nobody deletes" and line["sub"] == "alice"
    assert line["reason"] == "forbidden"
    assert would_deny == 1


def test_audit_mode_lets_a_scope_shortfall_through_and_logs_it(audit_envoy, mcp_server):
    (status, headers, body), lines, would_deny = audited(audit_envoy, lambda: tool_call(
        audit_envoy, "get_weather", {"city": "Nice"}, token=READER_NO_SCOPE))
    assert status == 200, body
    assert "www-authenticate" not in headers
    assert mcp_server.calls() == [("tools/call", "get_weather")]
    assert [(d["mcp_authz"], d.get("reason"), d.get("sub")) for d in lines] == [
        ("would_deny", "insufficient_scope", "bob")]
    assert would_deny == 1


def test_audit_mode_logs_allowed_decisions_too(audit_envoy, mcp_server):
    (status, _, body), lines, would_deny = audited(audit_envoy, lambda: tool_call(
        audit_envoy, "get_weather", {"city": "Bern"}, token=READER))
    assert status == 200, body
    assert [(d["mcp_authz"], d.get("reason"), d.get("name"), d.get("rule")) for d in lines] == [
        ("allow", None, "get_weather", "readers read")]
    assert would_deny == 0


def test_audit_mode_lets_a_request_without_token_through_and_logs_it(audit_envoy, mcp_server):
    (status, headers, body), lines, would_deny = audited(audit_envoy, lambda: tool_call(
        audit_envoy, "get_weather", {"city": "Metz"}, token=None, headers={"x-mcp-subject": "admin"}))
    assert status == 200, body
    seen = mcp_server.seen()
    assert mcp_server.calls() == [("tools/call", "get_weather")]
    assert seen[0]["headers"]["x-mcp-subject"] == [], "no identity, so no identity headers at all"
    assert [(d["mcp_authz"], d.get("reason")) for d in lines] == [("would_deny", "no_token")]
    assert would_deny == 1


# Last: the audit Envoy's log, after everything above ran through it.

def test_audit_log_never_holds_a_token(audit_envoy):
    tool_call(audit_envoy, "set_config", {"key": "k", "value": "v"}, token=READER)
    assert "would_deny" in audit_envoy.logs()
    assert_log_holds_no_token(audit_envoy, TOKENS)
