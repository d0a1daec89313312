"""README "Rolling out rule changes": rule changes without a restart, Envoy
taking the filter's configuration by ECDS from a file it watches. Under
load, a change is enforced quickly with no failed request, and an invalid
change is refused while the old one serves."""

import json
import os
import threading
import time

import pytest

from configs import ISSUER, RESOURCE, base_config, inline_provider
from harness import Envoy, poll, request, wasm_filter
from mcp_client import call, post
from tokens import RsaKey, claims

KEY = RsaKey("ecds")
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def plugin(allowed_tools):
    return base_config([inline_provider(KEY)], [{"name": "readers", "effect": "allow", "methods": ["tools/call"],
                                                 "names": allowed_tools, "roles": ["reader"]}])


def publish(directory, plugin_config):
    """Writes the ECDS file the way Envoy wants it replaced: atomically."""
    resource = {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": "mcp_authz",
                "typed_config": wasm_filter(plugin_config)["typed_config"]}
    tmp = os.path.join(directory, ".mcp_authz.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"resources": [resource]}, f)
    os.rename(tmp, os.path.join(directory, "mcp_authz.json"))


def ecds_filter(directory):
    return {"name": "mcp_authz", "config_discovery": {
        "config_source": {"path_config_source": {
            "path": os.path.join(directory, "mcp_authz.json"),
            "watched_directory": {"path": directory}}},
        "type_urls": [WASM_TYPE]}}


@pytest.fixture
def ecds(envoy_version, upstream, tmp_path):
    directory = str(tmp_path)
    publish(directory, plugin(["get_weather", "search"]))
    with Envoy(envoy_version, None, upstream.port, filters=[ecds_filter(directory)]) as e:
        yield e, directory


def status_of(envoy, tool, token):
    """The status of a `tools/call` of `tool` by `token`."""
    return post(envoy, call(tool), token)[0]


def wait_for(predicate, seconds):
    return poll(predicate, seconds, interval=0.02)


def test_rules_change_under_load_without_failed_requests(ecds):
    envoy, directory = ecds
    token = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"]))
    assert status_of(envoy, "search", token) == 200
    statuses, errors, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                statuses.append(status_of(envoy, "get_weather", token))
            except OSError as e:  # a reset or refused connection
                errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        published = time.time()
        publish(directory, plugin(["search"]))
        enforced = wait_for(lambda: status_of(envoy, "get_weather", token) == 403, 5)
        took = time.time() - published
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == [], errors[:5]
    assert set(statuses) <= {200, 403}, sorted(set(statuses))
    assert statuses.count(200) > 10 and statuses.count(403) > 10, (statuses.count(200), statuses.count(403))
    assert enforced and took < 1.0, f"new rule enforced after {took:.2f}s"
    assert status_of(envoy, "search", token) == 200


def test_invalid_update_is_refused_and_old_rules_keep_serving(ecds):
    envoy, directory = ecds
    token = KEY.sign(claims(ISSUER, RESOURCE, roles=["reader"]))
    bad = plugin(["get_weather"])
    bad["rules"] = []
    publish(directory, bad)
    assert wait_for(lambda: "configuration field `rules`: must not be empty" in envoy.logs(), 10), \
        envoy.logs()[-3000:]
    _, _, stats = request(envoy.admin_port, "GET", "/stats?filter=extension_config_discovery")
    assert b"config_fail: 1" in stats, stats.decode()
    # The previous configuration still decides.
    assert status_of(envoy, "get_weather", token) == 200
    assert status_of(envoy, "set_config", token) == 403
