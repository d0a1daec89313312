"""README "Wiring it into Envoy" (Istio) and "Publishing for Istio": the
Istio delivery in envoy/istio/, end to end: what istiod and istio-agent
hand to Envoy for each shipped EnvoyFilter (`tests/istio_translate.py`
computes it from the YAML as shipped, following Istio's code), run in real
Envoy on each tested version. An allowed MCP call reaches the upstream; a
refused one, or one without a token, is answered by the filter and the
router never starts an upstream request; when istio-agent cannot fetch the
module, its deny-all RBAC stand-in answers 403 and forwards nothing.

The controls show what the shipped choices guard against: without the RBAC
type URL the stand-in is rejected and Envoy answers 500; without
`allow_on_headers_stop_iteration` (what Istio 1.27's istiod, and every
WasmPlugin, hands over) MCP calls get no answer at all."""

import copy
import json
import os
import tempfile
from urllib.parse import urlparse

import pytest
import yaml

import istio_translate as it
from harness import WASM, Envoy
from jwks_server import JwksServer
from mcp_client import ACCEPT, call, post
from tokens import RsaKey, claims, jwks

KEY = RsaKey("istio")
# Shipped file -> the patch context Istio applies it in.
VARIANTS = {"envoyfilter-sidecar.yaml": "SIDECAR_INBOUND", "envoyfilter-gateway.yaml": "GATEWAY"}
SIDECAR = it.load_envoyfilter("envoyfilter-sidecar.yaml")
CONFIG = it.plugin_configuration(SIDECAR)
PROVIDER = CONFIG["providers"][0]
MCP_PATH = urlparse(CONFIG["resource"]).path
UPSTREAM_REQUESTS = "cluster.upstream.upstream_rq_total"


def built_module(uri, sha256):
    """istio-agent's module cache, for the tests: the shipped image is the
    built .wasm."""
    assert uri.startswith("oci://"), uri
    return WASM


def unavailable(uri, sha256):
    raise it.ModuleUnavailable(uri)


class IstioProxy(Envoy):
    """Envoy running what a proxy of patch context `context` gets for the
    EnvoyFilter `ef`: Istio's HTTP chain with the patches applied, and the
    ECDS resources as istio-agent forwards them, read from a file. The JWKS
    clusters of serviceentry.yaml are served by 127.0.0.1:`jwks_port`."""

    def __init__(self, version, ef, context, upstream_port, jwks_port, fetch=built_module, drop_fields=()):
        self.context, self.fetch, self.drop_fields = context, fetch, drop_fields
        self.ecds = os.path.join(tempfile.mkdtemp(prefix="mcp-authz-ecds-"), "ecds.json")
        self.filters = self.publish(ef)
        # The harness's bootstrap ends the chain with the router itself.
        assert self.filters[-1]["name"] == it.ROUTER
        super().__init__(version, None, upstream_port, clusters=it.jwks_clusters(jwks_port),
                         filters=self.filters[:-1])

    def publish(self, ef):
        """What istiod and istio-agent push for `ef`: writes the ECDS
        resources, returns the HTTP filter chain (the LDS part)."""
        filters, resources = it.translate(ef, self.context, self.fetch, self.ecds, self.drop_fields)
        it.write_ecds(self.ecds, resources)
        return filters

    def upstream_requests(self):
        """Requests the router started towards the MCP server."""
        return self.stats(UPSTREAM_REQUESTS).get(UPSTREAM_REQUESTS, 0)


@pytest.fixture(scope="module")
def keys():
    """The issuer's key set, at the shipped JWKS URL's path."""
    with JwksServer(jwks(KEY), jwks_path=urlparse(PROVIDER["jwks"]["remote"]["url"]).path) as server:
        yield server


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def shipped(request, envoy_version, upstream, keys):
    ef = it.load_envoyfilter(request.param)
    with IstioProxy(envoy_version, ef, VARIANTS[request.param], upstream.port, keys.port) as envoy:
        yield envoy


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def module_unavailable(request, envoy_version, upstream, keys):
    ef = it.load_envoyfilter(request.param)
    with IstioProxy(envoy_version, ef, VARIANTS[request.param], upstream.port, keys.port,
                    fetch=unavailable) as envoy:
        yield envoy


def token(roles=("reader",), scope="mcp:read"):
    return KEY.sign(claims(PROVIDER["issuer"], CONFIG["resource"], roles=roles, scope=scope))


def call_tool(envoy, tool, bearer=None, timeout=10):
    return post(envoy, call(tool, id=7, arguments={}), bearer, {"Accept": ACCEPT}, path=MCP_PATH, timeout=timeout)


def assert_not_forwarded(envoy, upstream, started_before):
    assert upstream.requests == [], upstream.requests
    assert envoy.upstream_requests() == started_before, "the router started an upstream request"


# --- the shipped files ------------------------------------------------------

@pytest.mark.parametrize("filename", sorted(VARIANTS))
def test_shipped_envoyfilter_adds_the_filter_istio_cannot_set_up_itself(filename):
    ef = it.load_envoyfilter(filename)
    entry_patch = it.single_patch(ef, "HTTP_FILTER")
    ext_patch = it.single_patch(ef, "EXTENSION_CONFIG")
    assert entry_patch["match"]["context"] == VARIANTS[filename]
    entry, ext = entry_patch["patch"]["value"], ext_patch["patch"]["value"]
    assert ext_patch["patch"]["operation"] == "ADD" and ext["name"] == entry["name"]
    assert entry["config_discovery"]["type_urls"] == [it.WASM_TYPE, it.RBAC_TYPE]
    wasm = ext["typed_config"]["config"]
    assert wasm["allow_on_headers_stop_iteration"] is True
    assert wasm["failure_policy"] == "FAIL_CLOSED"
    assert wasm["vm_config"]["code"]["remote"]["http_uri"]["uri"].startswith("oci://")
    assert it.plugin_configuration(ef) == CONFIG, "both variants carry the same plugin configuration"


def test_no_wasmplugin_is_shipped():
    kinds = {d["kind"] for p in it.ISTIO_DIR.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d}
    assert "WasmPlugin" not in kinds
    assert kinds >= {"EnvoyFilter", "ServiceEntry", "DestinationRule"}


@pytest.mark.parametrize("filename", sorted(VARIANTS))
def test_anchor_is_a_filter_istio_always_builds_so_the_entry_lands_before_the_router(filename):
    ef = it.load_envoyfilter(filename)
    context = VARIANTS[filename]
    entry_patch = it.single_patch(ef, "HTTP_FILTER")
    chain = it.istio_http_chain(context)
    assert it.http_filter_anchor(entry_patch) in [f["name"] for f in chain]
    patched = [f["name"] for f in it.patch_http_filters(ef, context, chain)]
    assert patched == [f["name"] for f in chain[:-1]] + [entry_patch["patch"]["value"]["name"], it.ROUTER]


def test_an_anchor_that_matches_nothing_inserts_nothing():
    """The caveat the README warns of: with the old shipped subFilter name the
    filter is simply not there."""
    ef = copy.deepcopy(SIDECAR)
    entry_patch = it.single_patch(ef, "HTTP_FILTER")
    entry_patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] = "mcp.mcp-authz"
    chain = it.istio_http_chain("SIDECAR_INBOUND")
    assert it.patch_http_filters(ef, "SIDECAR_INBOUND", chain) == chain


def test_ecds_resource_is_the_module_as_a_local_file_or_a_deny_all_rbac_filter():
    [resource] = it.extension_configs(SIDECAR, ["mcp-authz"])
    local = it.agent_convert(resource, built_module)
    assert local["typed_config"]["config"]["vm_config"]["code"] == {"local": {"filename": str(WASM)}}
    assert local["typed_config"]["config"]["allow_on_headers_stop_iteration"] is True
    fallback = it.agent_convert(resource, unavailable)
    assert fallback == {"name": "mcp-authz", "typed_config": {
        "@type": it.RBAC_TYPE, "rules": {}, "rules_stat_prefix": "wasm-default-deny"}}


# --- in Envoy ---------------------------------------------------------------

def test_allowed_call_reaches_the_upstream(shipped, upstream):
    upstream.clear()
    status, _, body = call_tool(shipped, "get_weather", token())
    assert status == 200, body
    [seen] = upstream.requests
    assert json.loads(seen["body"])["params"]["name"] == "get_weather"
    assert seen["headers"]["x-mcp-subject"] == "alice"
    assert "authorization" not in seen["headers"]


def test_refused_call_gets_403_and_never_reaches_the_upstream(shipped, upstream):
    upstream.clear()
    before = shipped.upstream_requests()
    status, _, body = call_tool(shipped, "delete_user", token(roles=("admin",), scope="mcp:read mcp:write"))
    assert status == 403, body
    assert json.loads(body)["error"]["code"] == -32003
    assert_not_forwarded(shipped, upstream, before)


def test_call_without_token_gets_401_challenge(shipped, upstream):
    upstream.clear()
    before = shipped.upstream_requests()
    status, headers, _ = call_tool(shipped, "get_weather")
    assert status == 401
    metadata = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata}"' in headers["www-authenticate"][0]
    assert_not_forwarded(shipped, upstream, before)


def test_module_unavailable_answers_403_and_forwards_nothing(module_unavailable, upstream):
    upstream.clear()
    before = module_unavailable.upstream_requests()
    for bearer in (None, token()):
        status, _, body = call_tool(module_unavailable, "get_weather", bearer)
        assert status == 403, body
        assert body == b"RBAC: access denied"
    assert_not_forwarded(module_unavailable, upstream, before)
    denied = {k: v for k, v in module_unavailable.stats("rbac").items() if k.endswith(".wasm-default-deny.denied")}
    assert list(denied.values()) == [2], "answered by istio-agent's deny-all stand-in"


def test_rule_change_in_the_envoyfilter_reaches_envoy_by_ecds_alone(envoy_version, upstream, keys):
    """Editing the EnvoyFilter's configuration changes only the ECDS
    resource: the HTTP chain (the listener) stays the same, and the new rules
    decide without a restart."""
    with IstioProxy(envoy_version, SIDECAR, "SIDECAR_INBOUND", upstream.port, keys.port) as envoy:
        assert call_tool(envoy, "get_weather", token())[0] == 200
        edited = copy.deepcopy(SIDECAR)
        ext_patch = it.single_patch(edited, "EXTENSION_CONFIG")
        plugin = copy.deepcopy(CONFIG)
        [readers] = [r for r in plugin["rules"] if r["name"] == "readers read"]
        readers["names"] = ["search"]
        ext_patch["patch"]["value"]["typed_config"]["config"]["configuration"]["value"] = json.dumps(plugin)
        assert envoy.publish(edited) == envoy.filters
        envoy.wait_for(lambda: call_tool(envoy, "get_weather", token())[0] == 403, 10, "apply the new rules")
        assert call_tool(envoy, "search", token())[0] == 200


# --- controls: what the shipped choices guard against -----------------------

def test_control_without_the_rbac_type_url_the_stand_in_is_rejected_with_500(envoy_version, upstream, keys):
    ef = copy.deepcopy(SIDECAR)
    entry_patch = it.single_patch(ef, "HTTP_FILTER")
    entry_patch["patch"]["value"]["config_discovery"]["type_urls"] = [it.WASM_TYPE]
    with IstioProxy(envoy_version, ef, "SIDECAR_INBOUND", upstream.port, keys.port, fetch=unavailable) as envoy:
        upstream.clear()
        before = envoy.upstream_requests()
        assert call_tool(envoy, "get_weather", token())[0] == 500
        assert_not_forwarded(envoy, upstream, before)
        rejected = "extension_config_discovery.http_filter.mcp-authz.update_rejected"
        assert envoy.stats(rejected)[rejected] == 1, "Envoy rejected the RBAC stand-in"


def test_control_without_the_flag_mcp_calls_get_no_answer(envoy_version, upstream, keys):
    """What istiod 1.27 hands over for the shipped file (its go-control-plane
    predates the field and drops it), and what every WasmPlugin gets."""
    with IstioProxy(envoy_version, SIDECAR, "SIDECAR_INBOUND", upstream.port, keys.port,
                    drop_fields=("allow_on_headers_stop_iteration",)) as envoy:
        upstream.clear()
        before = envoy.upstream_requests()
        assert call_tool(envoy, "get_weather")[0] == 401, "refusals decided from the headers still work"
        with pytest.raises(TimeoutError):
            call_tool(envoy, "get_weather", token(), timeout=3)
        assert_not_forwarded(envoy, upstream, before)
