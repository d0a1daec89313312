"""README "Per-route control": what Envoy lets a route do with the Wasm
filter, checked on each tested version with the built filter in front of a
recording upstream.

- `FilterConfig {disabled: true}` on a route turns the filter off there:
  nothing of the filter runs, other routes keep it;
- `disabled: true` in `http_filters` with `FilterConfig {}` on a route
  turns it on for that route alone;
- a `Wasm` message in `typed_per_filter_config` is refused by Envoy;
- the composite filter runs the filter only for the requests its matcher
  selects, holding the body as the filter needs.
"""

import json
import subprocess

import pytest

from configs import ISSUER, RESOURCE, TOOL_RULES, base_config, inline_provider
from harness import ROOT, Envoy, EnvoyExited, bootstrap, envoy_binary, wasm_filter
from mcp_client import LIST, call, post
from tokens import RsaKey, claims

KEY = RsaKey("per-route")
# Minted when the tests are collected: good for longer than a full run.
READER = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"], scope="mcp:read", ttl=24 * 3600))
CONFIG = base_config([inline_provider(KEY)], TOOL_RULES)

FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def static_route(prefix, per_filter):
    return {"match": {"prefix": prefix},
            "direct_response": {"status": 200, "body": {"inline_string": "static\n"}},
            "typed_per_filter_config": {"envoy.filters.http.wasm": per_filter}}


def test_a_route_can_turn_the_filter_off(envoy_version, upstream):
    routes = [static_route("/static/", {"@type": FILTER_CONFIG, "disabled": True})]
    with Envoy(envoy_version, CONFIG, upstream.port, routes=routes) as envoy:
        upstream.clear()
        assert envoy.request("GET", "/static/page")[0] == 200
        assert envoy.counters().get("denied.no_token", 0) == 0
        # Everywhere else the filter runs as ever.
        assert post(envoy, LIST)[0] == 401
        assert post(envoy, call("get_weather"), READER)[0] == 200
        assert upstream.requests and upstream.requests[0]["path"] == "/mcp"


def test_a_filter_off_in_the_chain_can_be_turned_on_per_route(envoy_version, upstream):
    wasm = wasm_filter(CONFIG) | {"disabled": True}
    routes = [{"match": {"prefix": "/mcp"}, "route": {"cluster": "upstream"},
               "typed_per_filter_config": {"envoy.filters.http.wasm": {"@type": FILTER_CONFIG, "config": {}}}}]
    with Envoy(envoy_version, None, upstream.port, filters=[wasm], routes=routes) as envoy:
        upstream.clear()
        assert post(envoy, LIST, path="/mcp")[0] == 401
        # A route without the override: no filter at all (why the README
        # prefers turning it off where it is not wanted).
        assert post(envoy, LIST, path="/elsewhere")[0] == 200
        assert [r["path"] for r in upstream.requests] == ["/elsewhere"]


def test_a_wasm_configuration_per_route_is_refused(envoy_version, upstream, tmp_path):
    per_route = wasm_filter(CONFIG)["typed_config"]
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(10000, 10001, CONFIG, upstream.port,
                                           routes=[static_route("/x/", per_route)])))
    out = subprocess.run([envoy_binary(envoy_version), "--mode", "validate", "-c", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "doesn't support virtual host or route specific configurations" in out.stdout + out.stderr


def composite(matched_prefix, wasm):
    """The composite filter running `wasm` for paths under `matched_prefix`."""
    return {
        "name": "composite",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {
                "name": "composite",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite"},
            },
            "xds_matcher": {"matcher_tree": {
                "input": {"name": "path", "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    "header_name": ":path"}},
                "prefix_match_map": {"map": {matched_prefix: {"action": {
                    "name": "mcp_authz",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction",
                        "typed_config": {"name": "envoy.filters.http.wasm", "typed_config": wasm["typed_config"]},
                    }}}}},
            }},
        },
    }


def test_the_composite_filter_runs_it_for_what_its_matcher_selects(envoy_version, upstream):
    try:
        envoy = Envoy(envoy_version, None, upstream.port, filters=[composite("/mcp", wasm_filter(CONFIG))]).start()
    except EnvoyExited as e:
        pytest.fail(f"composite with the Wasm filter refused: {e.logs[-2000:]}")
    try:
        upstream.clear()
        assert post(envoy, LIST)[0] == 401
        # The body is held and read: a forbidden call is refused, an allowed
        # one goes on.
        assert post(envoy, call("set_config"), READER)[0] == 403
        assert post(envoy, call("get_weather"), READER)[0] == 200
        assert post(envoy, LIST, path="/other")[0] == 200
        assert [r["path"] for r in upstream.requests] == ["/mcp", "/other"]
        assert json.loads(upstream.requests[0]["body"])["params"]["name"] == "get_weather"
    finally:
        envoy.stop()
