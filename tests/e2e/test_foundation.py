"""README "Request handling" steps 1-4 up to the token (the metadata
document, public paths, CORS preflights, the MCP endpoint's methods, the 401
challenge without a token) and the refused configurations of "Configuration
reference" and "Wiring it into Envoy" (`envoy --mode validate`, a running
Envoy), in a real Envoy with the built filter."""

import json
import subprocess

import pytest

from configs import ISSUER, METADATA_URL, RESOURCE, SCOPES, base_config, inline_provider
from harness import Envoy, EnvoyExited
from mcp_client import LIST, post
from tokens import RsaKey, jwks

KEY = RsaKey("k1")


def config(**overrides):
    return base_config([inline_provider(KEY, roles_claims=None)],
                       [{"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]}],
                       scopes_supported=SCOPES, resource_name="Example MCP server",
                       public_paths=["/healthz"]) | overrides


@pytest.fixture(scope="module")
def envoy(envoy_version, upstream):
    with Envoy(envoy_version, config(), upstream.port) as e:
        yield e


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp",
                                  "/.well-known/oauth-protected-resource"])
def test_metadata_document_served_at_both_well_known_paths(envoy, upstream, path):
    upstream.clear()
    status, headers, body = envoy.request("GET", path, headers={"Host": "evil.example.org"})
    assert status == 200
    assert headers["content-type"] == ["application/json"]
    doc = json.loads(body)
    assert doc == {
        "resource": RESOURCE,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["mcp:read", "mcp:write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Example MCP server",
    }
    assert upstream.requests == [], "the metadata document is answered by the filter"


def test_metadata_head_has_no_body(envoy):
    status, headers, body = envoy.request("HEAD", "/.well-known/oauth-protected-resource/mcp")
    assert status == 200 and body == b""


def test_metadata_refuses_other_methods(envoy):
    status, headers, _ = envoy.request("POST", "/.well-known/oauth-protected-resource/mcp", body="{}")
    assert status == 405
    assert headers["allow"] == ["GET, HEAD, OPTIONS"]


def test_no_token_gets_401_challenge_with_metadata_and_scope(envoy, upstream):
    upstream.clear()
    status, headers, body = post(envoy, LIST, headers={"Host": "evil.example.org"})
    assert status == 401
    assert headers["www-authenticate"] == [
        f'Bearer resource_metadata="{METADATA_URL}", scope="mcp:read mcp:write"']
    err = json.loads(body)
    assert err["jsonrpc"] == "2.0" and err["error"]["code"] == -32001
    assert upstream.requests == [], "nothing reaches the upstream without a token"


def test_token_in_query_string_is_never_accepted(envoy, upstream):
    upstream.clear()
    token = KEY.sign({"iss": ISSUER, "aud": RESOURCE, "exp": 4102444800})
    status, headers, body = envoy.request("GET", f"/mcp?access_token={token}")
    assert status == 401
    assert "error=" not in headers["www-authenticate"][0], "treated as no token at all"
    assert token.encode() not in body
    assert upstream.requests == []


def test_public_path_passes_without_token(envoy, upstream):
    upstream.clear()
    status, _, _ = envoy.request("GET", "/healthz")
    assert status == 200
    assert [r["path"] for r in upstream.requests] == ["/healthz"]


def test_public_paths_are_exact(envoy, upstream):
    upstream.clear()
    status, _, _ = envoy.request("GET", "/healthz/x")
    assert status == 401
    assert upstream.requests == []


def test_cors_preflight_passes_without_token(envoy, upstream):
    upstream.clear()
    status, _, _ = envoy.request("OPTIONS", "/mcp", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert status == 200
    assert [r["method"] for r in upstream.requests] == ["OPTIONS"]


def test_options_without_preflight_headers_is_not_an_mcp_method(envoy, upstream):
    """The MCP transport has no use for an OPTIONS that is no CORS preflight."""
    upstream.clear()
    status, headers, _ = envoy.request("OPTIONS", "/mcp")
    assert status == 405
    assert headers["allow"] == ["POST, GET, DELETE, OPTIONS"]
    assert upstream.requests == []


def test_no_scope_hint_when_none_configured(envoy_version, upstream):
    with Envoy(envoy_version, config(scopes_supported=None), upstream.port) as e:
        status, headers, _ = e.request("GET", "/mcp")
        assert status == 401
        assert headers["www-authenticate"] == [f'Bearer resource_metadata="{METADATA_URL}"']
        _, _, body = e.request("GET", "/.well-known/oauth-protected-resource/mcp")
        assert "scopes_supported" not in json.loads(body)


BAD_CONFIGS = [
    ("unknown key", dict(colour="blue"), "colour"),
    ("wrong type", dict(filter_lists="yes"), "filter_lists"),
    ("missing resource", dict(resource=None), "resource"),
    ("relative resource", dict(resource="/mcp"), "resource"),
    ("resource with fragment", dict(resource="https://mcp.example.com/mcp#x"), "resource"),
    ("empty providers", dict(providers=[]), "providers"),
    ("empty rules", dict(rules=[]), "rules"),
    ("bad glob", dict(rules=[{"effect": "allow", "methods": [""]}]), "rules[0].methods[0]"),
    ("bad jwks", dict(providers=[{"issuer": ISSUER, "jwks": {"inline": "not json"}}]), "providers[0].jwks.inline"),
    ("unknown algorithm", dict(providers=[{"issuer": ISSUER, "jwks": {"inline": jwks(KEY)},
                                          "algorithms": ["HS256"]}]), "providers[0].algorithms[0]"),
]


def drop_none(c):
    return {k: v for k, v in c.items() if v is not None}


@pytest.mark.parametrize("label,overrides,field", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_configuration_is_refused_by_validate_mode(envoy_version, upstream, label, overrides, field):
    e = Envoy(envoy_version, drop_none(config(**overrides)), upstream.port)
    out = subprocess.run(e.command("--mode", "validate"), capture_output=True, text=True, timeout=60)
    logs = out.stdout + out.stderr
    assert out.returncode != 0, logs[-2000:]
    assert f"configuration field `{field}`" in logs or (field == "" and "configuration" in logs), logs[-3000:]


def test_good_configuration_passes_validate_mode(envoy_version, upstream):
    e = Envoy(envoy_version, config(), upstream.port)
    out = subprocess.run(e.command("--mode", "validate"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


def test_running_envoy_refuses_bad_configuration(envoy_version, upstream):
    e = Envoy(envoy_version, drop_none(config(rules=[])), upstream.port)
    with pytest.raises(EnvoyExited) as exited:
        e.start()
    e.stop()
    assert "configuration field `rules`: must not be empty" in exited.value.logs
