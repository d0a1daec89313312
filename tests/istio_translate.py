"""What istiod and istio-agent hand to Envoy for the Istio delivery in
`envoy/istio/`, computed from the YAML as shipped. Each step follows Istio's
own code (istio/istio, release-1.28 to master, where these functions are the
same for what is modelled here) and names the file and function it follows;
the end-to-end tests (`tests/e2e/test_istio.py`) run real Envoy on the result.
No istiod or istio-agent runs: they are modelled from their source.

Reproduced:

- which EnvoyFilters a proxy gets: the root namespace's and its own
  namespace's, whose workload selector its labels satisfy
  (`envoyfilters_for`), for the proxies the shipped files are for: the MCP
  server's sidecar and Istio's ingress and egress gateways, labelled as
  Istio's charts label them (`PROXIES`);
- istiod's ECDS answer: the selected EnvoyFilters' `EXTENSION_CONFIG` ADD
  values, by name (`extension_configs`);
- istiod's HTTP filter chain for the proxy's patch context, and the
  EnvoyFilters' `HTTP_FILTER` patches applied to it (`istio_http_chain`,
  `patch_http_filters`);
- istio-agent's rewrite of every ECDS Wasm resource: the remote module
  becomes a local file, or, when it cannot be fetched, a deny-all (or, for a
  fail-open plugin, allow-all) RBAC filter of the same name (`agent_convert`);
- istiod's cluster for each ServiceEntry host and port, with the
  DestinationRule's client TLS settings as its transport socket
  (`outbound_clusters`, `upstream_tls_context`), and the SDS secrets
  istio-agent answers it with (`agent_root_secret`).

Substituted, because the tests have no cluster, registry, DNS or issuer:

- the transports: Envoy reads the ECDS resources and the SDS secrets from
  files (`path_config_source`) instead of ADS (`ads: {}`) through
  istio-agent and istio-agent's SDS server (the `sds-grpc` cluster)
  (`file_config_source`, `file_sds`); the rest of each entry is kept. So the
  shipped `ads: {}` and `initial_fetch_timeout: 0s` are not exercised;
- the module download: `fetch` (the tests' stand-in for istio-agent's module
  cache) maps the shipped `oci://` URI to the built `.wasm`, or fails;
- the clusters' endpoints: the tests' servers on 127.0.0.1 in a STATIC
  cluster, where istiod makes a DNS cluster for the ServiceEntry's host;
- the operating system's trust bundle, which istio-agent reads for
  `file-root:system`: a CA the tests make.

The plugin configuration itself is not substituted: the tests mint tokens for
the shipped issuer and resource and serve keys, over TLS with a certificate
for the shipped issuer's host, at the shipped JWKS URL's path through a
cluster of the shipped name. The chain holds the filters Istio always builds,
which upstream Envoy has too; the ones it adds depending on configuration
(`istio_http_chain`) are left out, Istio's own among them
(`istio.metadata_exchange`, `istio.stats`, `istio.alpn`: istio-proxy only).
What this model does not cover (other TLS modes, port-level settings,
EnvoyFilter priorities, targetRefs, Gateway API gateways...) it refuses with
a ValueError rather than ignore.

Fields: istiod parses the patch values with unknown fields allowed
(`pkg/config/xds/xds.go` `BuildXDSObjectFromStruct`, strict=false), so a field
its go-control-plane does not know is dropped silently (Istio 1.27 and
`allow_on_headers_stop_iteration`; `drop_fields` reproduces that). Envoy
refuses unknown fields, so the values as shipped are checked by Envoy itself.
"""

import base64
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
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
# MeshConfig's default rootNamespace (`DefaultMeshConfig`, pkg/config/mesh/mesh.go).
ROOT_NAMESPACE = "istio-system"
# The label that makes a proxy a Gateway API gateway (`workloadGatewayName`,
# pilot/pkg/model/policyattachment.go).
GATEWAY_API_LABEL = "gateway.networking.k8s.io/gateway-name"


class Proxy:
    """A proxy as istiod sees it: its type (`model.NodeType`, "sidecar" or
    "router": every Istio gateway, ingress or egress, is a "router"), its
    namespace and its pod's labels."""

    def __init__(self, node_type, namespace, labels):
        self.node_type, self.namespace, self.labels = node_type, namespace, dict(labels)

    def __repr__(self):
        return f"Proxy({self.node_type}, {self.namespace}, {self.labels})"


# The proxies the shipped files are for. The gateways carry the labels
# Istio's charts give them: manifests/charts/gateways/istio-ingress/values.yaml
# and istio-egress/values.yaml (`labels`), and manifests/charts/gateway
# (`gateway.selectorLabels` in templates/_helpers.tpl: `istio:` is the release
# name without `istio-`, so a release istio-egressgateway is
# `istio: egressgateway`). The sidecar is the MCP server's pod as the
# shipped sidecar file describes it.
PROXIES = {
    "sidecar": Proxy("sidecar", "mcp", {"app": "mcp-server"}),
    "ingress-gateway": Proxy("router", ROOT_NAMESPACE, {"app": "istio-ingressgateway", "istio": "ingressgateway"}),
    "egress-gateway": Proxy("router", ROOT_NAMESPACE, {"app": "istio-egressgateway", "istio": "egressgateway"}),
}


class ModuleUnavailable(Exception):
    """The module download failed (istio-agent: `cache.Get` returned an error)."""


def istio_resources(filename, kind):
    """The resources of `kind` in `envoy/istio/<filename>`."""
    docs = yaml.safe_load_all((ISTIO_DIR / filename).read_text())
    return [d for d in docs if d and d.get("kind") == kind]


def load_envoyfilter(filename):
    """The one EnvoyFilter in `envoy/istio/<filename>`."""
    [ef] = istio_resources(filename, "EnvoyFilter")
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


def patch_context(proxy):
    """The patch context of the listeners that carry a proxy's HTTP traffic
    in: `ListenerBuilder.patchListeners` (pilot/pkg/networking/core/
    listener_builder.go) patches a router's listeners (every gateway's) as
    GATEWAY; a sidecar's inbound listener, the MCP server's own, is
    SIDECAR_INBOUND."""
    return {"router": "GATEWAY", "sidecar": "SIDECAR_INBOUND"}[proxy.node_type]


def selects(ef, proxy):
    """Whether the EnvoyFilter applies to the proxy, by
    `WorkloadPolicyMatcher.ShouldAttachPolicy` / `isSelected`
    (pilot/pkg/model/policyattachment.go): no selector selects every proxy,
    else its labels must all be the proxy's."""
    if ef["spec"].get("targetRefs") or ef["spec"].get("targetRef") or GATEWAY_API_LABEL in proxy.labels:
        raise ValueError("not modelled: targetRefs and Gateway API gateways")
    wanted = (ef["spec"].get("workloadSelector") or {}).get("labels") or {}
    return all(proxy.labels.get(k) == v for k, v in wanted.items())


def envoyfilters_for(proxy, efs):
    """The EnvoyFilters of `efs` that istiod applies to `proxy`, in the order
    it applies them: `PushContext.EnvoyFilters` (pilot/pkg/model/
    push_context.go) takes the root namespace's (`getMatchedEnvoyFilters`),
    then, for a proxy in another namespace, its own namespace's; those of
    any other namespace never apply. It sorts them by priority, the root
    namespace first, then by creation time and name; priorities are not
    modelled and creation time is taken to follow the name."""
    if any(ef["spec"].get("priority") for ef in efs):
        raise ValueError("not modelled: EnvoyFilter priority")
    namespaces = [ROOT_NAMESPACE] + ([proxy.namespace] if proxy.namespace != ROOT_NAMESPACE else [])
    matched = [ef for ef in efs if ef["metadata"]["namespace"] in namespaces and selects(ef, proxy)]
    return sorted(matched, key=lambda ef: (ef["metadata"]["namespace"] != ROOT_NAMESPACE,
                                           ef["metadata"]["name"] + "." + ef["metadata"]["namespace"]))


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


def destination_rule_for(proxy, host, service_namespace, rules):
    """The DestinationRule of `rules` for `host` that a proxy uses, by
    `PushContext.destinationRule` (pilot/pkg/model/push_context.go): one in
    the proxy's own namespace (for a proxy in the root namespace: one there
    exported to it), else one in the service's namespace exported to the
    proxy's, else one in the root namespace exported to it. Only exact host
    names are modelled (istiod also matches wildcards)."""
    def exported(dr):
        export_to = dr["spec"].get("exportTo") or ["*"]
        return "*" in export_to or proxy.namespace in export_to or (
            "." in export_to and dr["metadata"]["namespace"] == proxy.namespace)

    for dr in rules:
        if dr["spec"]["host"] != host and "*" in dr["spec"]["host"]:
            raise ValueError(f"not modelled: wildcard DestinationRule host {dr['spec']['host']}")
        if dr["spec"].get("workloadSelector"):
            raise ValueError("not modelled: DestinationRule workloadSelector")
    for namespace in (proxy.namespace, service_namespace, ROOT_NAMESPACE):
        found = [dr for dr in rules if dr["spec"]["host"] == host
                 and dr["metadata"]["namespace"] == namespace and exported(dr)]
        if found:
            return found[0]
    return None


def sds_secret_config(name):
    """The SDS reference istiod writes for a secret of a file (`file-root:`,
    `file-cert:`): `constructSdsSecretConfigFromFile` (cluster_tls.go) ->
    `ConstructSdsSecretConfig` (pkg/model/authentication.go): by gRPC from
    istio-agent's SDS server, the `sds-grpc` cluster (`SDSClusterName`). The
    `sds-files-grpc` cluster is used instead only by a proxy whose pod
    mounts a file credential socket (not modelled)."""
    return {"name": name, "sds_config": {
        "api_config_source": {"api_type": "GRPC", "set_node_on_first_message_only": True,
                              "transport_api_version": "V3",
                              "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
        "resource_api_version": "V3"}}


def upstream_tls_context(tls, service_entry, port):
    """The `UpstreamTlsContext` istiod builds from a DestinationRule's client
    TLS settings for a ServiceEntry's port. `ClusterBuilder.applyTrafficPolicy`
    (cluster_traffic_policy.go) calls `buildUpstreamTLSSettings`, which
    passes SIMPLE settings on as they are, and `applyUpstreamTLSSettings` ->
    `buildUpstreamClusterTLSContext` -> `constructUpstreamTLS`
    (cluster_tls.go): TLS 1.2 to 1.3 (`defaultUpstreamCommonTLSContext`),
    the `sni`; the names to check are the settings' `subjectAltNames`, else,
    for a ServiceEntry (registry External), the ServiceEntry's own
    `subjectAltNames`; the CA is the SDS secret `file-root:<caCertificates>`,
    `file-root:system` when none is named (`SdsCertificateConfig`,
    pkg/security/security.go). With `sni` set, `setAutoSniAndAutoSanValidation`
    adds no automatic name check, so without names any certificate a trusted
    CA signed is accepted. `insecureSkipVerify` leaves an empty validation
    context. Mesh `tlsDefaults` (none by default: `applyTLSDefaults`) and
    FIPS compliance (`EnforceCompliance`, off by default) change nothing
    here. Other modes, client certificates, `credentialName`, `caCrl`, no
    `sni` (automatic SNI) and HTTP/2 ports (ALPN) are not modelled."""
    if tls.get("mode") != "SIMPLE":
        raise ValueError(f"not modelled: client TLS mode {tls.get('mode')}")
    unmodelled = set(tls) - {"mode", "sni", "subjectAltNames", "caCertificates", "insecureSkipVerify"}
    if unmodelled or not tls.get("sni"):
        raise ValueError(f"not modelled: client TLS settings {sorted(unmodelled) or ['no sni']}")
    if port["protocol"] in ("HTTP2", "GRPC", "GRPC-Web"):
        raise ValueError(f"not modelled: ALPN for a {port['protocol']} port")
    context = {"@type": UPSTREAM_TLS_TYPE,
               "common_tls_context": {"tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                                     "tls_maximum_protocol_version": "TLSv1_3"}},
               "sni": tls["sni"]}
    if tls.get("insecureSkipVerify"):
        context["common_tls_context"]["validation_context"] = {}
        return context
    names = tls.get("subjectAltNames") or service_entry["spec"].get("subjectAltNames") or []
    default = {"match_subject_alt_names": [{"exact": n} for n in names]} if names else {}
    context["common_tls_context"]["combined_validation_context"] = {
        "default_validation_context": default,
        "validation_context_sds_secret_config": sds_secret_config(
            "file-root:" + (tls.get("caCertificates") or "system")),
    }
    return context


def outbound_clusters(proxy, endpoint_port, service_entries=None, destination_rules=None):
    """The clusters istiod builds for the ServiceEntries, each served by
    127.0.0.1:`endpoint_port` (a substitution: istiod makes DNS clusters for
    resolution DNS). Named `outbound|<port>||<host>` (`model.BuildSubsetKey`,
    pilot/pkg/model/service.go), by `buildOutboundClusters`
    (pilot/pkg/networking/core/cluster.go), the same for a sidecar and a
    gateway; with the DestinationRule the proxy uses for the host
    (`destination_rule_for`), its traffic policy's TLS becomes the
    cluster's `envoy.transport_sockets.tls` transport socket
    (`applyUpstreamTLSSettings`, cluster_tls.go). Port-level settings and
    subsets are not modelled. The entries and rules default to the shipped
    serviceentry.yaml."""
    if service_entries is None:
        service_entries = istio_resources("serviceentry.yaml", "ServiceEntry")
    if destination_rules is None:
        destination_rules = istio_resources("serviceentry.yaml", "DestinationRule")
    out = []
    for se in service_entries:
        for host in se["spec"]["hosts"]:
            dr = destination_rule_for(proxy, host, se["metadata"]["namespace"], destination_rules)
            policy = (dr or {}).get("spec", {}).get("trafficPolicy") or {}
            if policy.get("portLevelSettings") or (dr or {}).get("spec", {}).get("subsets"):
                raise ValueError("not modelled: port-level settings and subsets")
            for port in se["spec"]["ports"]:
                c = cluster(f"outbound|{port['number']}||{host}", endpoint_port)
                if policy.get("tls"):
                    c["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                             "typed_config": upstream_tls_context(policy["tls"], se, port)}
                out.append(c)
    return out


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


def agent_root_secret(name, trust_bundles):
    """The SDS secret istio-agent answers for a CA resource `name`
    (`file-root:<path>`): `SecretManagerClient.generateFileSecret`
    (security/pkg/nodeagent/cache/secretcache.go) reads the file the name
    holds, or for `file-root:system` the operating system's trust bundle
    (`CARootPath`, found by pilot-agent), and `toEnvoySecret`
    (security/pkg/nodeagent/sds/sdsservice.go) makes it a validation context
    with the bundle as `trusted_ca`. `trust_bundles` stands in for the
    files: path ("system" for the OS bundle) -> PEM bytes."""
    if not name.startswith("file-root:"):
        raise ValueError(f"not modelled: SDS secret {name}")
    pem = trust_bundles[name[len("file-root:"):]]
    return {"name": name, "validation_context": {"trusted_ca": {"inline_bytes": base64.b64encode(pem).decode()}}}


def sds_references(c):
    """The SDS references (`SdsSecretConfig`) in a cluster's transport socket."""
    common = c.get("transport_socket", {}).get("typed_config", {}).get("common_tls_context", {})
    combined = common.get("combined_validation_context", {})
    refs = [combined.get("validation_context_sds_secret_config")] + common.get("tls_certificate_sds_secret_configs", [])
    return [ref for ref in refs if ref]


def sds_names(clusters):
    """The SDS secrets the clusters' transport sockets ask for."""
    return list(dict.fromkeys(ref["name"] for c in clusters for ref in sds_references(c)))


# --- what the tests hand to Envoy -------------------------------------------

def plugin_configuration(ef):
    """The plugin configuration JSON of the EnvoyFilter's Wasm extension, parsed."""
    resource = single_patch(ef, "EXTENSION_CONFIG")["patch"]["value"]
    configuration = resource["typed_config"]["config"]["configuration"]
    assert configuration["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    return json.loads(configuration["value"])


def path_source(config_source, path):
    """`config_source` reading from the file at `path` (watched: Envoy
    rereads it when it is replaced) instead of ADS or gRPC; its other fields
    are kept."""
    config_source.pop("ads", None)
    config_source.pop("api_config_source", None)
    config_source["path_config_source"] = {"path": str(path),
                                           "watched_directory": {"path": os.path.dirname(str(path))}}


def file_config_source(filters, path):
    """The chain with each `config_discovery` reading from the file at `path`
    instead of ADS; everything else in the entry is kept."""
    filters = copy.deepcopy(filters)
    for f in filters:
        if "config_discovery" in f:
            path_source(f["config_discovery"]["config_source"], path)
    return filters


def file_sds(clusters, path):
    """The clusters with each SDS reference reading from the file at `path`
    instead of istio-agent's SDS server; everything else is kept."""
    clusters = copy.deepcopy(clusters)
    for c in clusters:
        for ref in sds_references(c):
            path_source(ref["sds_config"], path)
    return clusters


def write_discovery(path, type_url, resources):
    """A discovery response Envoy reads from `path`, replaced atomically
    (write, then rename) so Envoy never reads half a file."""
    tmp = os.path.join(os.path.dirname(str(path)), "." + os.path.basename(str(path)) + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"resources": [{"@type": type_url, **r} for r in resources]}, f)
    os.rename(tmp, path)


def write_ecds(path, resources):
    """The ECDS discovery response (TypedExtensionConfig resources)."""
    write_discovery(path, EXTENSION_CONFIG_TYPE, resources)


def write_sds(path, secrets):
    """The SDS discovery response (Secret resources)."""
    write_discovery(path, SECRET_TYPE, secrets)


def translate(proxy, efs, fetch, ecds_path, drop_fields=()):
    """The HTTP filter chain and the ECDS resources `proxy` gets from the
    EnvoyFilters `efs` (all of them, as in a cluster: `envoyfilters_for`
    picks the proxy's), ready for the tests' Envoy: (filters, resources)."""
    context = patch_context(proxy)
    mine = envoyfilters_for(proxy, efs)
    filters = istio_http_chain(context)
    for ef in mine:
        filters = patch_http_filters(ef, context, filters)
    names = ecds_names(filters)
    resources = [agent_convert(r, fetch) for ef in mine for r in extension_configs(ef, names, drop_fields)]
    return file_config_source(filters, ecds_path), resources
