"""The README's answer to forged-token floods: Envoy's `local_ratelimit` in
front of the filter. The snippet is taken from the README itself, so the
documented configuration is the tested one."""

import copy
import http.client
import json
import re
import subprocess

import yaml

from configs import ISSUER, RESOURCE, base_config
from harness import ROOT, Envoy, envoy_binary, read_response, wasm_filter
from tokens import RsaKey, claims, jwks

KEY = RsaKey("flood-1")
STATS = "wasmcustom.mcp_authz."


def readme_filters():
    """The `http_filters` of the README's local_ratelimit snippet in front
    of the filter (the per-tool limits after it, in "The verified call for
    the rest of the chain", are tested in test_servers.py)."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)
              if "envoy.filters.http.local_ratelimit" in b and b.startswith("http_filters:")]
    assert len(blocks) == 1, "exactly one local_ratelimit chain in the README"
    filters = yaml.safe_load(blocks[0])["http_filters"]
    names = [f["name"] for f in filters]
    assert names == ["envoy.filters.http.local_ratelimit", "envoy.filters.http.wasm",
                     "envoy.filters.http.router"], names
    return filters


def plugin_config():
    return base_config([{"issuer": ISSUER, "jwks": {"inline": jwks(KEY)}}],
                       [{"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]}])


def chain(rate_limit):
    """The README's order: the rate limit, then mcp_authz (the harness adds
    the router)."""
    return [rate_limit, wasm_filter(plugin_config())]


def forged_token():
    token = KEY.sign(claims(ISSUER, RESOURCE, ttl=3600))
    head, sig = token.rsplit(".", 1)
    return head + "." + ("A" if sig[0] != "A" else "B") + sig[1:]


def get(envoy, token, source="127.0.0.1"):
    """GET with a bearer token, from `source` (a loopback address)."""
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/mcp", headers={"Authorization": f"Bearer {token}"})
        return read_response(conn)[0]
    finally:
        conn.close()


def test_readme_rate_limit_snippet_passes_validate_mode(envoy_version, tmp_path, upstream):
    rate_limit = readme_filters()[0]
    envoy = Envoy(envoy_version, plugin_config(), upstream.port, filters=chain(rate_limit))
    config = tmp_path / "envoy.json"
    config.write_text(open(envoy.config_path).read())
    out = subprocess.run([envoy_binary(envoy_version), "--mode", "validate", "-c", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "mcp_authz: configured" in out.stdout + out.stderr


def test_rate_limit_keeps_a_forged_token_flood_from_the_verifier(envoy_version, upstream):
    rate_limit = copy.deepcopy(readme_filters()[0])
    # The README's snippet with a per-address bucket of 3 that does not refill
    # during the test.
    bucket = rate_limit["typed_config"]["descriptors"][0]["token_bucket"]
    bucket.update(max_tokens=3, tokens_per_fill=1, fill_interval="3600s")
    forged = forged_token()
    with Envoy(envoy_version, plugin_config(), upstream.port, filters=chain(rate_limit)) as envoy:
        statuses = [get(envoy, forged) for _ in range(8)]
        assert statuses == [401] * 3 + [429] * 5, statuses
        stats = envoy.stats()
        # Only the requests the bucket let through cost a signature check.
        assert stats[STATS + "invalid_token.signature"] == 3, json.dumps(stats, indent=1)
        # Another client address has its own bucket.
        assert get(envoy, forged, source="127.0.0.2") == 401
        assert envoy.stats()[STATS + "invalid_token.signature"] == 4
        assert envoy.stats("mcp_authz_flood")["mcp_authz_flood.http_local_rate_limit.rate_limited"] == 5
