"""Contract section 6: counters in Envoy's stats (and Prometheus), one JSON
log line per denial (per decision in audit mode), never the token."""

import json
import time

import pytest

from configs import ISSUER, RESOURCE, base_config, inline_provider
from harness import Envoy, request
from tokens import RsaKey, claims

KEY = RsaKey("obs")
PREFIX = "wasmcustom.mcp_authz."


def config(**overrides):
    return base_config([inline_provider(KEY)], [
        {"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]},
        {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"],
         "roles": ["reader"], "scopes": ["mcp:read"]},
    ], max_body_bytes=2048) | overrides


@pytest.fixture(scope="module")
def envoy(envoy_version, upstream):
    with Envoy(envoy_version, config(), upstream.port) as e:
        yield e


def post(envoy, body, token=None, content_type="application/json", extra=None):
    headers = {"Content-Type": content_type, **(extra or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return envoy.request("POST", "/mcp", body=body, headers=headers)


def call(tool, id=1):
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool}}


def moved(envoy, action):
    before = envoy.stats()
    action()
    after = envoy.stats()
    return {k[len(PREFIX):]: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_each_outcome_moves_its_counters(envoy):
    reader = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], scope="mcp:read"))
    no_scope = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"]))
    expired = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], ttl=-3600))
    cases = [
        (lambda: post(envoy, call("get_weather"), reader), {"allowed", "token_cache.miss"}),
        (lambda: post(envoy, call("get_weather"), reader), {"allowed", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather")), {"denied.no_token"}),
        (lambda: post(envoy, call("get_weather"), expired),
         {"denied.invalid_token", "invalid_token.expired"}),
        (lambda: post(envoy, call("set_config"), reader), {"denied.forbidden", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather"), no_scope),
         {"denied.insufficient_scope", "token_cache.miss"}),
        (lambda: post(envoy, "{oops", reader), {"denied.bad_request", "bad_request.parse_error", "token_cache.hit"}),
        (lambda: post(envoy, {"no": "jsonrpc"}, reader),
         {"denied.bad_request", "bad_request.invalid_request", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather"), reader, extra={"Mcp-Name": "other"}),
         {"denied.bad_request", "bad_request.header_mismatch", "token_cache.hit"}),
        (lambda: post(envoy, "x" * 4096, reader), {"denied.too_large", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather"), reader, content_type="text/plain"),
         {"denied.unsupported_media_type", "token_cache.hit"}),
    ]
    for action, expected in cases:
        changes = moved(envoy, action)
        assert set(changes) == expected, (expected, changes)
        assert all(v == 1 for v in changes.values()), changes


def test_counters_are_in_prometheus_output(envoy):
    post(envoy, call("get_weather"))
    _, _, body = request(envoy.admin_port, "GET", "/stats/prometheus")
    lines = body.decode().splitlines()
    assert "# TYPE mcp_authz_denied_no_token counter" in lines
    assert any(l.startswith("mcp_authz_denied_no_token") and not l.endswith(" 0") for l in lines)
    assert any(l.startswith("mcp_authz_allowed") for l in lines)


def decision_lines(envoy):
    out = []
    for line in envoy.logs().splitlines():
        start = line.find('{"')
        if start >= 0 and '"mcp_authz"' in line:
            out.append(json.loads(line[start:]))
    return out


def test_one_json_line_per_denial_with_who_and_why_but_never_the_token(envoy):
    token = KEY.sign(claims(ISSUER, RESOURCE, sub="carol", roles=["reader"], scope="mcp:read"))
    before = len(decision_lines(envoy))
    status, _, _ = post(envoy, call("set_config", id=42), token, extra={"x-request-id": "req-obs-1"})
    assert status == 403
    deadline = time.time() + 5
    while len(decision_lines(envoy)) == before and time.time() < deadline:
        time.sleep(0.05)
    line = decision_lines(envoy)[-1]
    assert line["mcp_authz"] == "deny"
    assert line["reason"] == "forbidden"
    assert line["method"] == "tools/call" and line["name"] == "set_config"
    assert line["sub"] == "carol" and line["client_id"] == "test-client" and line["issuer"] == ISSUER
    assert line["request_id"] == "req-obs-1"
    assert line["rule"] is None, "default deny names no rule"
    assert token not in envoy.logs()
    assert token.split(".")[2] not in envoy.logs(), "not even the signature"


def test_audit_mode_logs_every_decision_and_refuses_nothing(envoy_version, upstream):
    with Envoy(envoy_version, config(mode="audit"), upstream.port) as e:
        token = KEY.sign(claims(ISSUER, RESOURCE, sub="dave", roles=["reader"], scope="mcp:read"))
        upstream.clear()
        assert post(e, call("set_config"), token)[0] == 200
        assert post(e, call("get_weather"), token)[0] == 200
        assert post(e, call("get_weather"))[0] == 200
        assert [json.loads(r["body"])["params"]["name"] for r in upstream.requests] == \
            ["set_config", "get_weather", "get_weather"]
        deadline = time.time() + 5
        while len(decision_lines(e)) < 3 and time.time() < deadline:
            time.sleep(0.05)
        kinds = [(l["mcp_authz"], l.get("reason")) for l in decision_lines(e)]
        assert kinds == [("would_deny", "forbidden"), ("allow", None), ("would_deny", "no_token")]
        stats = e.stats()
        assert stats[PREFIX + "audit_would_deny"] == 2
        assert token not in e.logs()
