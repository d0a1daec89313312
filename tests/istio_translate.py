"""What istiod and istio-agent hand to Envoy for the Istio delivery in
`envoy/istio/`, computed from the YAML as shipped. Each step follows Istio's
own code (istio/istio, release-1.28 to master, where these functions are the
same) and names the file and function it follows; the end-to-end tests
(`tests/e2e/test_istio.py`) run real Envoy on the result.

Reproduced:

- istiod's ECDS answer: the EnvoyFilter's `EXTENSION_CONFIG` ADD values, by
  name (`extension_configs`);
- istiod's HTTP filter chain for the patch context, and the EnvoyFilter's
  `HTTP_FILTER` patches applied to it (`istio_http_chain`,
  `patch_http_filters`);
- istio-agent's rewrite of every ECDS Wasm resource: the remote module
  becomes a local file, or, when it cannot be fetched, a deny-all (or, for a
  fail-open plugin, allow-all) RBAC filter of the same name (`agent_convert`);
- Istio's cluster name for a ServiceEntry host and port (`jwks_clusters`).

Substituted, because the tests have no cluster, registry or issuer:

- the transport: Envoy reads the ECDS resources from a file
  (`path_config_source`) instead of ADS (`ads: {}`) through istio-agent
  (`file_config_source`); the rest of the entry is kept as shipped;
- the module download: `fetch` (the tests' stand-in for istio-agent's module
  cache) maps the shipped `oci://` URI to the built `.wasm`, or fails;
- the JWKS cluster's endpoint: the tests' key server on 127.0.0.1, over plain
  HTTP; Istio resolves the ServiceEntry host by DNS and the DestinationRule
  adds TLS with its SNI (not reproduced here).

The plugin configuration itself is not substituted: the tests mint tokens for
the shipped issuer and resource and serve keys at the shipped JWKS URL's path
through a cluster of the shipped name. The chain holds the filters Istio
always builds, which upstream Envoy has too; the ones it adds depending on
configuration (`istio_http_chain`) are left out, Istio's own among them
(`istio.metadata_exchange`, `istio.stats`, `istio.alpn`: istio-proxy only).

Fields: istiod parses the patch values with unknown fields allowed
(`pkg/config/xds/xds.go` `BuildXDSObjectFromStruct`, strict=false), so a field
its go-control-plane does not know is dropped silently (Istio 1.27 and
`allow_on_headers_stop_iteration`; `drop_fields` reproduces that). Envoy
refuses unknown fields, so the values as shipped are checked by Envoy itself.
"""

import copy
import json
import os

import yaml

from harness import ROOT, cluster

ISTIO_DIR = ROOT / "envoy" / "istio"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
EXTENSION_CONFIG_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"

# The filters `buildHTTPConnectionManager` (pilot/pkg/networking/core/
# listener_builder.go; names from pkg/wellknown/wellknown.go and
# pilot/pkg/xds/filters/filters.go) puts in every HTTP connection manager of a
# sidecar's inbound listeners and of a gateway's listeners, whatever the mesh
# configuration: GrpcStats, Fault, Cors and, last, BuildRouterFilter. In
# between, depending on configuration, come `istio.metadata_exchange` (first;
# features.MetadataExchange), ext_authz (CUSTOM AuthorizationPolicy),
# WasmPlugins, jwt_authn (RequestAuthentication), rbac (AuthorizationPolicy),
# grpc_web, `istio.alpn` (gateways; features.ALPNFilter), `istio.stats`
# (Telemetry) and stateful_session (gateways; a feature flag).
_ALWAYS = [
    {"name": "envoy.filters.http.grpc_stats", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
        "emit_filter_state": True, "stats_for_all_methods": False}},
    {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
    {"name": "envoy.filters.http.cors", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
    {"name": ROUTER, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
]
PATCH_CONTEXTS = ("SIDECAR_INBOUND", "GATEWAY")


class ModuleUnavailable(Exception):
    """The module download failed (istio-agent: `cache.Get` returned an error)."""


def load_envoyfilter(filename):
    """The one EnvoyFilter in `envoy/istio/<filename>`."""
    docs = [d for d in yaml.safe_load_all((ISTIO_DIR / filename).read_text()) if d]
    [ef] = [d for d in docs if d.get("kind") == "EnvoyFilter"]
    return ef


def shipped_envoyfilters():
    """Every `envoyfilter-*.yaml` of envoy/istio/, by file name."""
    return {p.name: load_envoyfilter(p.name) for p in sorted(ISTIO_DIR.glob("envoyfilter-*.yaml"))}


def patches(ef, apply_to):
    """The EnvoyFilter's config patches for `apply_to` (e.g. HTTP_FILTER)."""
    return [cp for cp in ef["spec"]["configPatches"] if cp["applyTo"] == apply_to]


def single_patch(ef, apply_to):
    """The EnvoyFilter's one config patch for `apply_to`."""
    [cp] = patches(ef, apply_to)
    return cp


# --- istiod -----------------------------------------------------------------

def extension_configs(ef, names, drop_fields=()):
    """The ECDS resources istiod serves for the requested `names`:
    `BuildExtensionConfiguration` (pilot/pkg/networking/core/
    extension_config_builder.go) calls `InsertedExtensionConfigurations`
    (pilot/pkg/networking/core/envoyfilter/extension_configuration_patch.go),
    which takes the EXTENSION_CONFIG patches whose operation is ADD and whose
    value's name was requested, cloned as they are (WasmPlugins add theirs
    beside; there are none here). `drop_fields` are Wasm `config` fields
    istiod's go-control-plane would not know and so drop."""
    out = []
    for cp in patches(ef, "EXTENSION_CONFIG"):
        value = cp["patch"]["value"]
        if cp["patch"]["operation"] != "ADD" or value["name"] not in names:
            continue
        resource = copy.deepcopy(value)
        for field in drop_fields:
            resource["typed_config"]["config"].pop(field, None)
        out.append(resource)
    return out


def istio_http_chain(context):
    """The HTTP filters Istio always builds for a listener of this patch
    context, in order (see _ALWAYS)."""
    if context not in PATCH_CONTEXTS:
        raise ValueError(f"not modelled: patch context {context}")
    return copy.deepcopy(_ALWAYS)


def http_filter_anchor(cp):
    """The subFilter name an HTTP_FILTER patch matches on (None: no anchor),
    after checking that its match holds only what `patch_http_filters`
    models; anything else (ports, listener names, SNI...) is refused rather
    than ignored."""
    match = dict(cp.get("match") or {})
    match.pop("context", None)
    listener = dict(match.pop("listener", None) or {})
    chain = dict(listener.pop("filterChain", None) or {})
    network = dict(chain.pop("filter", None) or {})
    name = network.pop("name", None)
    sub = dict(network.pop("subFilter", None) or {})
    anchor = sub.pop("name", None)
    left = {k: v for k, v in [("match", match), ("listener", listener), ("filterChain", chain),
                              ("filter", network), ("subFilter", sub)] if v}
    if left:
        raise ValueError(f"not modelled: HTTP_FILTER match fields {left}")
    if name not in (None, HCM):
        raise ValueError(f"not modelled: network filter {name}")
    return anchor


def patch_http_filters(ef, context, filters):
    """`filters` with the EnvoyFilter's HTTP_FILTER patches applied, as
    `patchHTTPFilters` (pilot/pkg/networking/core/envoyfilter/
    listener_patch.go, with insertBeforeFunc / insertAfterFunc from util.go)
    does: a patch applies when its context is this one or ANY; ADD appends;
    INSERT_FIRST prepends; INSERT_BEFORE / INSERT_AFTER without a subFilter
    prepend / append, with one they insert next to the first filter of that
    name and insert nothing when no filter has it."""
    filters = copy.deepcopy(filters)
    for cp in patches(ef, "HTTP_FILTER"):
        if (cp.get("match") or {}).get("context", "ANY") not in (context, "ANY"):
            continue
        anchor = http_filter_anchor(cp)
        op, value = cp["patch"]["operation"], copy.deepcopy(cp["patch"]["value"])
        names = [f["name"] for f in filters]
        if op == "ADD" or (op == "INSERT_AFTER" and anchor is None):
            filters.append(value)
        elif op == "INSERT_FIRST" or (op == "INSERT_BEFORE" and anchor is None):
            filters.insert(0, value)
        elif op in ("INSERT_BEFORE", "INSERT_AFTER"):
            if anchor in names:
                filters.insert(names.index(anchor) + (op == "INSERT_AFTER"), value)
        else:
            raise ValueError(f"not modelled: HTTP_FILTER operation {op}")
    return filters


def ecds_names(filters):
    """The ECDS resources Envoy asks for: the names of the entries with
    `config_discovery`."""
    return [f["name"] for f in filters if "config_discovery" in f]


def jwks_clusters(port):
    """Envoy clusters named the way istiod names a ServiceEntry's host and
    port, `outbound|<port>||<host>` (`model.BuildSubsetKey`,
    pilot/pkg/model/service.go), each served by 127.0.0.1:`port`."""
    docs = yaml.safe_load_all((ISTIO_DIR / "serviceentry.yaml").read_text())
    return [cluster(f"outbound|{p['number']}||{host}", port)
            for d in docs if d and d["kind"] == "ServiceEntry"
            for host in d["spec"]["hosts"] for p in d["spec"]["ports"]]


# --- istio-agent ------------------------------------------------------------

def _fail_open(wasm_config):
    """`httpWasmFailOpen` (pkg/wasm/convert.go): failure_policy when set,
    else the deprecated fail_open."""
    policy = wasm_config.get("failure_policy", "UNSPECIFIED")
    if policy != "UNSPECIFIED":
        return policy == "FAIL_OPEN"
    return bool(wasm_config.get("fail_open", False))


def rbac_fallback(name, fail_open):
    """`createHTTPDefaultFilter` (pkg/wasm/convert.go): an RBAC filter under
    the extension's name; empty rules deny everything, no rules allow
    everything."""
    if fail_open:
        rbac = {"@type": RBAC_TYPE, "rules_stat_prefix": "wasm-default-allow"}
    else:
        rbac = {"@type": RBAC_TYPE, "rules": {}, "rules_stat_prefix": "wasm-default-deny"}
    return {"name": name, "typed_config": rbac}


def agent_convert(resource, fetch):
    """One ECDS resource as istio-agent forwards it to Envoy:
    `XdsProxy.handleUpstreamResponse` / `rewriteAndForward`
    (pkg/istio-agent/xds_proxy.go) pass every ECDS answer, whoever made it,
    to `MaybeConvertWasmExtensionConfig` (pkg/wasm/convert.go). A Wasm filter
    with a remote module (`tryUnmarshal`) gets it downloaded
    (`rewriteVMConfig`: `cache.Get`, here `fetch(uri, sha256)`) and its code
    rewritten to the local file, its ISTIO_META* environment variables
    stripped; when the download fails, the resource becomes
    `createHTTPDefaultFilter`'s RBAC filter. Anything else passes unchanged."""
    typed = resource.get("typed_config") or {}
    if typed.get("@type") != WASM_TYPE:
        if "typed_config" not in resource:
            raise ValueError(f"{resource.get('name')}: no typed_config (istio-agent NACKs it)")
        return copy.deepcopy(resource)
    config = typed.get("config", {})
    code = config.get("vm_config", {}).get("code", {})
    if "remote" not in code:
        if "local" not in code:
            raise ValueError(f"{resource['name']}: neither remote nor local code (istio-agent NACKs it)")
        return copy.deepcopy(resource)
    remote = code["remote"]
    try:
        if "http_uri" not in remote:
            raise ModuleUnavailable("remote code without http_uri")
        sha256 = remote.get("sha256", "")
        path = fetch(remote["http_uri"]["uri"], "" if sha256 == "nil" else sha256)
    except ModuleUnavailable:
        return rbac_fallback(resource["name"], _fail_open(config))
    out = copy.deepcopy(resource)
    vm = out["typed_config"]["config"]["vm_config"]
    vm["code"] = {"local": {"filename": str(path)}}
    env = vm.get("environment_variables")
    if env:
        kv = {k: v for k, v in env.get("key_values", {}).items() if not k.startswith("ISTIO_META")}
        if kv:
            env["key_values"] = kv
        elif env.get("host_env_keys"):
            env.pop("key_values", None)
        else:
            del vm["environment_variables"]
    return out


# --- what the tests hand to Envoy -------------------------------------------

def plugin_configuration(ef):
    """The plugin configuration JSON of the EnvoyFilter's Wasm extension, parsed."""
    resource = single_patch(ef, "EXTENSION_CONFIG")["patch"]["value"]
    configuration = resource["typed_config"]["config"]["configuration"]
    assert configuration["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    return json.loads(configuration["value"])


def file_config_source(filters, path):
    """The chain with each `config_discovery` reading from the file at `path`
    instead of ADS; everything else in the entry is kept."""
    filters = copy.deepcopy(filters)
    for f in filters:
        if "config_discovery" in f:
            source = f["config_discovery"]["config_source"]
            source.pop("ads")
            source["path_config_source"] = {"path": str(path),
                                            "watched_directory": {"path": os.path.dirname(str(path))}}
    return filters


def write_ecds(path, resources):
    """The ECDS discovery response Envoy reads from `path`, replaced
    atomically (write, then rename) so Envoy never reads half a file."""
    tmp = os.path.join(os.path.dirname(str(path)), "." + os.path.basename(str(path)) + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"resources": [{"@type": EXTENSION_CONFIG_TYPE, **r} for r in resources]}, f)
    os.rename(tmp, path)


def translate(ef, context, fetch, ecds_path, drop_fields=()):
    """The HTTP filter chain and the ECDS resources a proxy of `context` gets
    for this EnvoyFilter, ready for the tests' Envoy: (filters, resources)."""
    filters = patch_http_filters(ef, context, istio_http_chain(context))
    resources = [agent_convert(r, fetch) for r in extension_configs(ef, ecds_names(filters), drop_fields)]
    return file_config_source(filters, ecds_path), resources
