"""Every Envoy configuration in envoy/ is valid for each tested Envoy, and
every YAML file there parses."""

import subprocess
from pathlib import Path

import pytest
import yaml

from harness import ROOT, envoy_binary

EXAMPLES = ROOT / "envoy"
ENVOY_CONFIGS = sorted(p for p in EXAMPLES.rglob("envoy.yaml"))
ALL_YAML = sorted(EXAMPLES.rglob("*.yaml"))


def test_there_are_examples():
    assert {p.parent.name for p in ENVOY_CONFIGS} >= {"local", "keycloak"}
    assert (EXAMPLES / "istio" / "wasmplugin.yaml").exists()


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


def test_istio_plugin_config_is_accepted_by_the_filter(envoy_version, tmp_path):
    """The WasmPlugin's pluginConfig is the same configuration: run it through
    the filter in validate mode."""
    import json

    from harness import bootstrap

    plugin = yaml.safe_load((EXAMPLES / "istio" / "wasmplugin.yaml").read_text())["spec"]["pluginConfig"]
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(10000, 10001, plugin, 10002)))
    out = subprocess.run([envoy_binary(envoy_version), "--mode", "validate", "-c", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
