"""README "Observability": the counters in Envoy's stats (and Prometheus),
one JSON decision line per refusal, and never a token in Envoy's log. (The
decision lines and the `audit_would_deny` counter of `mode: "audit"` are in
`test_audit.py`.)"""

import pytest

from configs import ISSUER, RESOURCE, base_config, inline_provider
from harness import Envoy, poll, request
from mcp_client import assert_log_holds_no_token, call, post
from tokens import RsaKey, claims

KEY = RsaKey("obs")
READER = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], scope="mcp:read", ttl=3600))
NO_SCOPE = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], ttl=3600))
EXPIRED = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], ttl=-3600))
CAROL = KEY.sign(claims(ISSUER, RESOURCE, sub="carol", roles=["reader"], scope="mcp:read", ttl=3600))
ADMIN = KEY.sign(claims(ISSUER, RESOURCE, sub="root", roles=["admin"], scope="mcp:read mcp:write", ttl=3600))


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


def moved(envoy, action):
    before = envoy.counters()
    action()
    after = envoy.counters()
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_each_outcome_moves_its_counters(envoy):
    defined = envoy.counters()
    for name in ["allowed", "denied.invalid_token", "invalid_token.expired",
                 "token_cache.hit", "token_cache.miss", "jwks_fetch.ok", "jwks_fetch.failed"]:
        assert name in defined, f"{name} is not in Envoy's stats: {sorted(defined)}"
    cases = [
        (lambda: post(envoy, call("get_weather"), READER), {"allowed", "token_cache.miss"}),
        (lambda: post(envoy, call("get_weather"), READER), {"allowed", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather"), READER), {"allowed", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather")), {"denied.no_token"}),
        (lambda: post(envoy, call("get_weather"), EXPIRED),
         {"denied.invalid_token", "invalid_token.expired"}),
        (lambda: post(envoy, call("set_config"), READER), {"denied.forbidden", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather"), NO_SCOPE),
         {"denied.insufficient_scope", "token_cache.miss"}),
        (lambda: post(envoy, "{oops", READER), {"denied.bad_request", "bad_request.parse_error", "token_cache.hit"}),
        (lambda: post(envoy, {"no": "jsonrpc"}, READER),
         {"denied.bad_request", "bad_request.invalid_request", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather"), READER, {"Mcp-Name": "other"}),
         {"denied.bad_request", "bad_request.header_mismatch", "token_cache.hit"}),
        (lambda: post(envoy, "x" * 4096, READER), {"denied.too_large", "token_cache.hit"}),
        (lambda: post(envoy, call("get_weather"), READER, content_type="text/plain"),
         {"denied.unsupported_media_type", "token_cache.hit"}),
    ]
    for action, expected in cases:
        changes = moved(envoy, action)
        assert set(changes) == expected, (expected, changes)
        assert all(v == 1 for v in changes.values()), changes
    after = envoy.counters()
    assert after["jwks_fetch.ok"] == 0 and after["jwks_fetch.failed"] == 0, "inline keys fetch nothing"


def test_counters_are_in_prometheus_output(envoy):
    post(envoy, call("get_weather"))
    _, _, body = request(envoy.admin_port, "GET", "/stats/prometheus")
    lines = body.decode().splitlines()
    assert "# TYPE mcp_authz_denied_no_token counter" in lines
    assert any(l.startswith("mcp_authz_denied_no_token") and not l.endswith(" 0") for l in lines)
    assert any(l.startswith("mcp_authz_allowed") for l in lines)


def test_one_json_line_per_denial_with_who_and_why(envoy):
    before = len(envoy.decisions())
    status, _, _ = post(envoy, call("set_config", id=42), CAROL, {"x-request-id": "req-obs-1"})
    assert status == 403
    poll(lambda: len(envoy.decisions()) > before, 5)
    line = envoy.decisions()[-1]
    assert line["mcp_authz"] == "deny"
    assert line["reason"] == "forbidden"
    assert line["method"] == "tools/call" and line["name"] == "set_config"
    assert line["sub"] == "carol" and line["client_id"] == "test-client" and line["issuer"] == ISSUER
    assert line["request_id"] == "req-obs-1"
    assert line["rule"] is None, "default deny names no rule"


# Last: Envoy's log, after everything above ran through it.

def test_envoy_log_never_holds_a_token(envoy):
    post(envoy, call("delete_everything"), ADMIN)
    assert '"mcp_authz":"deny"' in envoy.logs()
    assert_log_holds_no_token(envoy, [READER, NO_SCOPE, EXPIRED, CAROL, ADMIN])
