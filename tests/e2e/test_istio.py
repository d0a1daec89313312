"""README "Wiring it into Envoy" (Istio) and "Publishing for Istio": the
Istio delivery in envoy/istio/, end to end: what istiod and istio-agent
hand to Envoy from the shipped files for each proxy they are for (the MCP
server's sidecar, Istio's ingress gateway and its egress gateway;
`tests/istio_translate.py` computes it following Istio's code), run in real
Envoy on each tested version. An allowed MCP call reaches the upstream; a
refused one, or one without a token, is answered by the filter and the
router never starts an upstream request; when istio-agent cannot fetch the
module, its deny-all RBAC stand-in answers 403 and forwards nothing.

The filter fetches the issuer's keys over TLS through the cluster istiod
makes from serviceentry.yaml: the key server presents a certificate for the
shipped issuer host from a CA made at test time, which stands in for the
operating system's trust bundle istio-agent serves by SDS. A key server
whose certificate another CA signed, or that names another host, is
refused: the filter answers 503 and forwards nothing.

The controls show what the shipped choices guard against: without the RBAC
type URL the stand-in is rejected and Envoy answers 500; without
`allow_on_headers_stop_iteration` (what Istio 1.27's istiod, and every
WasmPlugin, hands over) MCP calls get no answer at all; without the
DestinationRule's `subjectAltNames` a certificate for another host is
accepted."""

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
from mcp_client import ACCEPT, assert_keys_unavailable, call, post
from tls_ca import Authority, server_context
from tokens import RsaKey, claims, jwks

KEY = RsaKey("istio")
# Shipped file -> the proxy it is for (istio_translate.PROXIES).
VARIANTS = {"envoyfilter-sidecar.yaml": "sidecar", "envoyfilter-gateway.yaml": "ingress-gateway",
            "envoyfilter-egress-gateway.yaml": "egress-gateway"}
SHIPPED = [it.load_envoyfilter(f) for f in sorted(VARIANTS)]
SIDECAR = it.load_envoyfilter("envoyfilter-sidecar.yaml")
CONFIG = it.plugin_configuration(SIDECAR)
PROVIDER = CONFIG["providers"][0]
JWKS_URL = urlparse(PROVIDER["jwks"]["remote"]["url"])
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
    """Envoy running what the proxy `proxy` (a key of
    istio_translate.PROXIES) gets from the EnvoyFilters `efs` (default: the
    shipped ones): Istio's HTTP chain with its EnvoyFilters' patches applied,
    and the ECDS resources as istio-agent forwards them, read from a file.
    The ServiceEntry's clusters (with the DestinationRule's TLS) are served
    by 127.0.0.1:`keys_port`, and istio-agent's SDS answers, from a file,
    with `system_roots` (PEM) as the operating system's trust bundle."""

    def __init__(self, version, proxy, upstream_port, keys_port, system_roots, efs=SHIPPED, fetch=built_module,
                 drop_fields=(), destination_rules=None):
        self.proxy, self.fetch, self.drop_fields = it.PROXIES[proxy], fetch, drop_fields
        self.xds_dir = tempfile.mkdtemp(prefix="mcp-authz-xds-")
        self.ecds = os.path.join(self.xds_dir, "ecds.json")
        self.filters = self.publish(efs)
        # The harness's bootstrap ends the chain with the router itself.
        assert self.filters[-1]["name"] == it.ROUTER
        clusters = it.outbound_clusters(self.proxy, keys_port, destination_rules=destination_rules)
        sds = os.path.join(self.xds_dir, "sds.json")
        it.write_sds(sds, [it.agent_root_secret(n, {"system": system_roots}) for n in it.sds_names(clusters)])
        super().__init__(version, None, upstream_port, clusters=it.file_sds(clusters, sds), filters=self.filters[:-1])

    def publish(self, efs):
        """What istiod and istio-agent push for the EnvoyFilters `efs`:
        writes the ECDS resources, returns the HTTP filter chain (the LDS
        part)."""
        filters, resources = it.translate(self.proxy, efs, self.fetch, self.ecds, self.drop_fields)
        it.write_ecds(self.ecds, resources)
        return filters

    def upstream_requests(self):
        """Requests the router started towards the MCP server."""
        return self.stats(UPSTREAM_REQUESTS).get(UPSTREAM_REQUESTS, 0)

    def tls_failures(self, kind):
        """The JWKS cluster's count of handshakes refused for `kind`
        (`fail_verify_error`: an untrusted CA; `fail_verify_san`: a
        certificate for another name)."""
        suffix = ".ssl." + kind
        return sum(v for k, v in self.stats("ssl.fail_verify").items()
                   if k.startswith("cluster.outbound|") and k.endswith(suffix))


@pytest.fixture(scope="module")
def system_ca():
    """The CA the proxies trust: the operating system's trust bundle, as far
    as these tests go."""
    return Authority("mcp-authz test system roots")


def key_server(ca, dns_name):
    """The issuer's key set at the shipped JWKS URL's path, over HTTPS with a
    certificate `ca` issued for `dns_name`."""
    return JwksServer(jwks(KEY), jwks_path=JWKS_URL.path, tls=server_context(ca, dns_name))


@pytest.fixture(scope="module")
def keys(system_ca):
    with key_server(system_ca, JWKS_URL.hostname) as server:
        yield server


@pytest.fixture(params=sorted(it.PROXIES), scope="module")
def shipped(request, envoy_version, upstream, keys, system_ca):
    with IstioProxy(envoy_version, request.param, upstream.port, keys.port, system_ca.pem) as envoy:
        yield envoy


@pytest.fixture(params=sorted(it.PROXIES), scope="module")
def module_unavailable(request, envoy_version, upstream, keys, system_ca):
    with IstioProxy(envoy_version, request.param, upstream.port, keys.port, system_ca.pem,
                    fetch=unavailable) as envoy:
        yield envoy


def token(roles=("reader",), scope="mcp:read"):
    return KEY.sign(claims(PROVIDER["issuer"], CONFIG["resource"], roles=roles, scope=scope))


def call_tool(envoy, tool, bearer=None, timeout=10):
    return post(envoy, call(tool, id=7, arguments={}), bearer, {"Accept": ACCEPT}, path=MCP_PATH, timeout=timeout)


def sidecar_file_edited(edit):
    """The shipped EnvoyFilters with the sidecar's edited by `edit`."""
    edited = copy.deepcopy(SIDECAR)
    edit(edited)
    return [ef for ef in SHIPPED if ef["metadata"]["name"] != SIDECAR["metadata"]["name"]] + [edited]


def assert_not_forwarded(envoy, upstream, started_before):
    assert upstream.requests == [], upstream.requests
    assert envoy.upstream_requests() == started_before, "the router started an upstream request"


# --- the shipped files ------------------------------------------------------

@pytest.mark.parametrize("filename", sorted(VARIANTS))
def test_shipped_envoyfilter_adds_the_filter_istio_cannot_set_up_itself(filename):
    ef = it.load_envoyfilter(filename)
    entry_patch = it.single_patch(ef, "HTTP_FILTER")
    ext_patch = it.single_patch(ef, "EXTENSION_CONFIG")
    assert entry_patch["match"]["context"] == it.patch_context(it.PROXIES[VARIANTS[filename]])
    entry, ext = entry_patch["patch"]["value"], ext_patch["patch"]["value"]
    assert ext_patch["patch"]["operation"] == "ADD" and ext["name"] == entry["name"]
    assert entry["config_discovery"]["type_urls"] == [it.WASM_TYPE, it.RBAC_TYPE]
    wasm = ext["typed_config"]["config"]
    assert wasm["allow_on_headers_stop_iteration"] is True
    assert wasm["failure_policy"] == "FAIL_CLOSED"
    assert wasm["vm_config"]["code"]["remote"]["http_uri"]["uri"].startswith("oci://")
    assert it.plugin_configuration(ef) == CONFIG, "every variant carries the same plugin configuration"


def test_no_wasmplugin_is_shipped():
    kinds = {d["kind"] for p in it.ISTIO_DIR.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d}
    assert "WasmPlugin" not in kinds
    assert kinds >= {"EnvoyFilter", "ServiceEntry", "DestinationRule"}


def test_each_proxy_gets_exactly_its_own_variant():
    """Applied all together, as in a cluster, each shipped EnvoyFilter
    reaches the one proxy it is for and no other: the egress gateway is not
    selected by the ingress gateway's file, nor the other way round."""
    for filename, proxy in VARIANTS.items():
        mine = it.envoyfilters_for(it.PROXIES[proxy], SHIPPED)
        assert [ef["metadata"]["name"] for ef in mine] == [it.load_envoyfilter(filename)["metadata"]["name"]], proxy


@pytest.mark.parametrize("proxy", sorted(it.PROXIES))
def test_anchor_is_a_filter_istio_always_builds_so_the_entry_lands_before_the_router(proxy):
    context = it.patch_context(it.PROXIES[proxy])
    [ef] = it.envoyfilters_for(it.PROXIES[proxy], SHIPPED)
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


@pytest.mark.parametrize("proxy", sorted(it.PROXIES))
def test_jwks_cluster_speaks_tls_with_the_destination_rules_sni_and_names(proxy):
    """Every proxy, the gateways in istio-system too, uses the
    DestinationRule of namespace mcp for the issuer's host (it is exported
    to all namespaces): the plugin configuration's JWKS cluster sends the
    issuer's SNI, checks the certificate's names, and trusts the operating
    system's CAs through istio-agent's SDS."""
    [jwks_cluster] = [c for c in it.outbound_clusters(it.PROXIES[proxy], 1)
                      if c["name"] == PROVIDER["jwks"]["remote"]["cluster"]]
    socket = jwks_cluster["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    assert socket["typed_config"]["sni"] == JWKS_URL.hostname
    combined = socket["typed_config"]["common_tls_context"]["combined_validation_context"]
    assert combined["default_validation_context"] == {"match_subject_alt_names": [{"exact": JWKS_URL.hostname}]}
    assert combined["validation_context_sds_secret_config"]["name"] == "file-root:system"


# --- in Envoy ---------------------------------------------------------------

def test_allowed_call_reaches_the_upstream_with_keys_fetched_over_tls(shipped, upstream, keys):
    upstream.clear()
    status, _, body = call_tool(shipped, "get_weather", token())
    assert status == 200, body
    [seen] = upstream.requests
    assert json.loads(seen["body"])["params"]["name"] == "get_weather"
    assert seen["headers"]["x-mcp-subject"] == "alice"
    assert "authorization" not in seen["headers"]
    # The key server speaks only TLS; every handshake named the issuer.
    assert keys.count() >= 1
    assert keys.server_names and set(keys.server_names) == {JWKS_URL.hostname}, keys.server_names


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


def test_rule_change_in_the_envoyfilter_reaches_envoy_by_ecds_alone(envoy_version, upstream, keys, system_ca):
    """Editing the EnvoyFilter's configuration changes only the ECDS
    resource: the HTTP chain (the listener) stays the same, and the new rules
    decide without a restart."""
    with IstioProxy(envoy_version, "sidecar", upstream.port, keys.port, system_ca.pem) as envoy:
        assert call_tool(envoy, "get_weather", token())[0] == 200
        plugin = copy.deepcopy(CONFIG)
        [readers] = [r for r in plugin["rules"] if r["name"] == "readers read"]
        readers["names"] = ["search"]

        def new_rules(ef):
            wasm = it.single_patch(ef, "EXTENSION_CONFIG")["patch"]["value"]["typed_config"]["config"]
            wasm["configuration"]["value"] = json.dumps(plugin)
        assert envoy.publish(sidecar_file_edited(new_rules)) == envoy.filters
        envoy.wait_for(lambda: call_tool(envoy, "get_weather", token())[0] == 403, 10, "apply the new rules")
        assert call_tool(envoy, "search", token())[0] == 200


# --- the issuer's keys over TLS: refused certificates -----------------------

def assert_key_server_refused(envoy_version, upstream, server, system_ca, failure):
    """A sidecar whose key server is `server`: a call with a valid token
    gets 503 (keys unavailable) and reaches nothing; the handshake fails on
    Envoy's side for `failure` (IstioProxy.tls_failures) and the key server
    never sees a request."""
    with IstioProxy(envoy_version, "sidecar", upstream.port, server.port, system_ca.pem) as envoy:
        upstream.clear()
        before = envoy.upstream_requests()
        assert_keys_unavailable(call_tool(envoy, "get_weather", token()), upstream)
        assert_not_forwarded(envoy, upstream, before)
        assert envoy.tls_failures(failure) >= 1, envoy.stats("ssl.fail_verify")
        assert server.server_names, "the filter tried the key server"
        assert server.count() == 0, "no request crossed the refused handshake"


def test_key_server_certificate_from_another_ca_gives_503(envoy_version, upstream, system_ca):
    with key_server(Authority("some other CA"), JWKS_URL.hostname) as server:
        assert_key_server_refused(envoy_version, upstream, server, system_ca, "fail_verify_error")


def test_key_server_certificate_for_another_host_gives_503(envoy_version, upstream, system_ca):
    """The shipped DestinationRule names the issuer's host: a certificate the
    trusted CA issued for another host is refused."""
    with key_server(system_ca, "elsewhere.example.com") as server:
        assert_key_server_refused(envoy_version, upstream, server, system_ca, "fail_verify_san")


def test_control_without_subject_alt_names_a_certificate_for_another_host_is_accepted(
        envoy_version, upstream, system_ca):
    """Why the shipped DestinationRule lists `subjectAltNames`: with only
    `sni`, istiod sets no name check, and any certificate from a trusted CA
    passes."""
    rules = it.istio_resources("serviceentry.yaml", "DestinationRule")
    for dr in rules:
        dr["spec"]["trafficPolicy"]["tls"].pop("subjectAltNames")
    with key_server(system_ca, "elsewhere.example.com") as server, \
            IstioProxy(envoy_version, "sidecar", upstream.port, server.port, system_ca.pem,
                       destination_rules=rules) as envoy:
        upstream.clear()
        assert call_tool(envoy, "get_weather", token())[0] == 200
        assert server.count() >= 1


# --- controls: what the shipped choices guard against -----------------------

def test_control_without_the_rbac_type_url_the_stand_in_is_rejected_with_500(envoy_version, upstream, keys,
                                                                             system_ca):
    def wasm_type_only(ef):
        it.single_patch(ef, "HTTP_FILTER")["patch"]["value"]["config_discovery"]["type_urls"] = [it.WASM_TYPE]
    with IstioProxy(envoy_version, "sidecar", upstream.port, keys.port, system_ca.pem,
                    efs=sidecar_file_edited(wasm_type_only), fetch=unavailable) as envoy:
        upstream.clear()
        before = envoy.upstream_requests()
        assert call_tool(envoy, "get_weather", token())[0] == 500
        assert_not_forwarded(envoy, upstream, before)
        rejected = "extension_config_discovery.http_filter.mcp-authz.update_rejected"
        assert envoy.stats(rejected)[rejected] == 1, "Envoy rejected the RBAC stand-in"


def test_control_without_the_flag_mcp_calls_get_no_answer(envoy_version, upstream, keys, system_ca):
    """What istiod 1.27 hands over for the shipped file (its go-control-plane
    predates the field and drops it), and what every WasmPlugin gets."""
    with IstioProxy(envoy_version, "sidecar", upstream.port, keys.port, system_ca.pem,
                    drop_fields=("allow_on_headers_stop_iteration",)) as envoy:
        upstream.clear()
        before = envoy.upstream_requests()
        assert call_tool(envoy, "get_weather")[0] == 401, "refusals decided from the headers still work"
        with pytest.raises(TimeoutError):
            call_tool(envoy, "get_weather", token(), timeout=3)
        assert_not_forwarded(envoy, upstream, before)
