"""README "Wiring it into Envoy" and "Publishing for Istio": every Envoy
configuration in envoy/ is valid for each tested Envoy, and every YAML file
there parses."""

import json
import subprocess

import pytest
import yaml

import istio_translate
from harness import ROOT, WASM, bootstrap, envoy_binary

EXAMPLES = ROOT / "envoy"
ENVOY_CONFIGS = sorted(p for p in EXAMPLES.rglob("envoy.yaml"))
ALL_YAML = sorted(EXAMPLES.rglob("*.yaml"))


def test_there_are_examples():
    assert {p.parent.name for p in ENVOY_CONFIGS} >= {"local", "keycloak"}
    assert set(istio_translate.shipped_envoyfilters()) == {
        "envoyfilter-sidecar.yaml", "envoyfilter-gateway.yaml", "envoyfilter-egress-gateway.yaml"}


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, "empty YAML file"


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_envoy_config_passes_validate_mode(envoy_version, path):
    out = subprocess.run([envoy_binary(envoy_version), "--mode", "validate", "-c", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "mcp_authz: configured" in out.stdout + out.stderr


@pytest.mark.parametrize("filename", sorted(istio_translate.shipped_envoyfilters()))
def test_istio_filter_config_is_accepted_by_envoy_and_the_filter(envoy_version, filename, tmp_path):
    """The Wasm filter configuration of each shipped EnvoyFilter, as
    istio-agent hands it to Envoy (the module as a local file), inline in
    validate mode: Envoy knows every field and the filter accepts the plugin
    configuration."""
    ef = istio_translate.load_envoyfilter(filename)
    resource = istio_translate.single_patch(ef, "EXTENSION_CONFIG")["patch"]["value"]
    local = istio_translate.agent_convert(resource, lambda uri, sha256: WASM)
    wasm = {"name": resource["name"], "typed_config": local["typed_config"]}
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(10000, 10001, None, 10002, filters=[wasm])))
    out = subprocess.run([envoy_binary(envoy_version), "--mode", "validate", "-c", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "mcp_authz: configured" in out.stdout + out.stderr
