"""Interop: opaque access tokens by introspection (README "Opaque tokens:
introspection") and a token for the upstream by exchange (README "A token
for the upstream: token exchange"), against a real authorization server on
both Envoy versions.

- Authorization server: npm `oidc-provider` (`authorization_server.mjs`),
  issuing opaque access tokens to `svc-opaque-*` and RS256 JWTs to `svc-*`,
  side by side; its own introspection endpoint (open only to the gateway's
  client `mcp-gateway`) and revocation. Token exchange is CUSTOM: the test
  server's own RFC 8693 grant, registered through oidc-provider's grant-type
  API (`provider.registerGrantType`); oidc-provider has none built in.
- The filter: the provider's JWKS and introspection endpoint both
  discovered from the issuer; the gateway's client secret handed to the VM
  as an environment variable.
- Upstream: the official Python SDK's MCP server, or a recording upstream
  where a test must see the exact token the upstream got.
- The official Python SDK client drives one whole flow with an opaque
  token (401 → discovery → client credentials → calls).
"""

import base64
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness import ENVOY_VERSIONS, Envoy, RecordingUpstream, bootstrap, cluster, free_port, poll, wasm_filter
from mcp_client import LIST, modern_call, post, tool_call
from mcp_upstream import McpUpstream
from stack import AuthorizationServer, plugin_config, run_client
from dpop_client import DpopKey
from tokens import EcKey

SECRET_ENV = "MCP_AUTHZ_CLIENT_SECRET"
KEY_ENV = "MCP_AUTHZ_CLIENT_KEY"
GATEWAY_SECRET = "mcp-gateway-secret"
ROLES = ["main", "burst", "exchange", "refused", "misissued", "down", "pkjwt", "dpop"]
CACHE_SECONDS = 4


@pytest.fixture(scope="module")
def ports():
    """Every Envoy's port, chosen up front: the authorization server knows
    each one's resource URI."""
    return {(v, role): free_port() for v in ENVOY_VERSIONS for role in ROLES}


def resource(port):
    return f"http://127.0.0.1:{port}/mcp"


GATEWAY_KEY = EcKey("mcp-gateway-key")


@pytest.fixture(scope="module")
def auth(ports):
    # The gateway's public key, for its `private_key_jwt` client.
    os.environ["GATEWAY_PUBLIC_JWK"] = json.dumps(GATEWAY_KEY.jwk)
    try:
        with AuthorizationServer(free_port(), [resource(p) for p in ports.values()]) as server:
            yield server
    finally:
        os.environ.pop("GATEWAY_PUBLIC_JWK", None)


@pytest.fixture(scope="module")
def mcp_server():
    with McpUpstream(json_response=True, stateless=True) as server:
        yield server


@pytest.fixture(scope="module")
def recording():
    server = RecordingUpstream()
    yield server
    server.close()


class GatewayEnvoy(Envoy):
    """Envoy with the filter on a port chosen beforehand, the client secret
    in the VM's environment, and the authorization server as cluster
    `idp` (`dead` goes nowhere)."""

    def __init__(self, version, port, plugin, upstream_port, idp_port, concurrency=1):
        clusters = [cluster("idp", idp_port), cluster("dead", free_port())]
        f = wasm_filter(plugin)
        number = GATEWAY_KEY.private.private_numbers().private_value
        private_jwk = {**GATEWAY_KEY.jwk, "d": base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()}
        f["typed_config"]["config"]["vm_config"]["environment_variables"] = {
            "key_values": {SECRET_ENV: GATEWAY_SECRET, KEY_ENV: json.dumps(private_jwk)}}
        super().__init__(version, plugin, upstream_port, clusters, concurrency=concurrency, filters=[f])
        self.port = port
        with open(self.config_path, "w") as out:
            json.dump(bootstrap(port, self.admin_port, plugin, upstream_port, clusters, [f]), out)

    def start(self, timeout=30):
        super().start(timeout)
        self.wait_for(lambda: self.counters().get("jwks_fetch.ok", 0) >= 1, timeout, "fetch the JWKS",
                      not_yet=(Exception,))
        return self


def gateway_config(port, issuer, upstream_token=None, cache_seconds=CACHE_SECONDS, private_key_jwt=False,
                   dpop=None):
    config = plugin_config(resource(port), issuer)
    if dpop:
        config["providers"][0]["dpop"] = dpop
    config["providers"][0]["introspection"] = {
        "cluster": "idp", "client_id": "mcp-gateway", "client_secret_env": SECRET_ENV,
        "timeout_ms": 2000, "cache_seconds": cache_seconds}
    if private_key_jwt:
        config["providers"][0]["introspection"].update(
            {"client_id": "mcp-gateway-pkjwt", "client_auth": "private_key_jwt", "client_key_env": KEY_ENV})
        del config["providers"][0]["introspection"]["client_secret_env"]
    if upstream_token:
        config["upstream_token"] = {"cluster": "idp", "client_id": "mcp-gateway",
                                    "client_secret_env": SECRET_ENV, "scope": "mcp:read", **upstream_token}
    return config


def gateway(version, role, ports, auth, upstream_port, concurrency=1, **config):
    port = ports[(version, role)]
    return GatewayEnvoy(version, port, gateway_config(port, auth.issuer, **config), upstream_port, auth.port,
                        concurrency=concurrency)


@pytest.fixture(scope="module")
def main(envoy_version, ports, auth, mcp_server):
    with gateway(envoy_version, "main", ports, auth, mcp_server.port) as e:
        yield e


def token_for(auth, client_id, port, dpop_key=None):
    """A client-credentials access token of `client_id` for the Envoy on
    `port`; bound to `dpop_key` when given (the token request carries a
    proof by it, RFC 9449 §5)."""
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "mcp:read",
                                   "resource": resource(port)}).encode()
    basic = base64.b64encode(f"{client_id}:{client_id}-secret".encode()).decode()
    req = urllib.request.Request(auth.issuer + "/token", data=form,
                                 headers={"authorization": f"Basic {basic}",
                                          "content-type": "application/x-www-form-urlencoded"})
    if dpop_key is not None:
        req.add_header("DPoP", dpop_key.proof("POST", auth.issuer + "/token"))
    with urllib.request.urlopen(req, timeout=5) as r:
        answer = json.loads(r.read())
    assert answer["token_type"] == ("DPoP" if dpop_key else "Bearer"), answer
    return answer["access_token"]


def revoke(auth, client_id, token):
    form = urllib.parse.urlencode({"token": token}).encode()
    basic = base64.b64encode(f"{client_id}:{client_id}-secret".encode()).decode()
    req = urllib.request.Request(auth.issuer + "/token/revocation", data=form,
                                 headers={"authorization": f"Basic {basic}",
                                          "content-type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def events(auth, kind, since=0):
    return [e for e in auth.events()[since:] if e.get("event") == kind]


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- introspection ----------------------------------------------------------------


def test_opaque_token_accepted_and_mapped_to_roles(main, auth, mcp_server):
    token = token_for(auth, "svc-opaque-reader", main.port)
    assert "." not in token, "oidc-provider issued an opaque token"
    mcp_server.clear()
    since = len(auth.events())
    status, _, body = tool_call(main, "get_weather", {"city": "Oslo"}, token=token)
    assert status == 200, body
    [seen] = [r for r in mcp_server.seen() if r["rpc"]]
    assert seen["authorization"] is False, "the token never reaches the MCP server"
    assert seen["headers"]["x-mcp-roles"] == ["reader"]
    assert seen["headers"]["x-mcp-client-id"] == ["svc-opaque-reader"]
    assert seen["headers"]["x-mcp-scopes"] == ["mcp:read"]
    [asked] = events(auth, "introspection", since)
    assert asked["client_id"] == "mcp-gateway" and asked["active"] is True


def test_a_jwt_client_keeps_the_local_path_side_by_side(main, auth):
    token = token_for(auth, "svc-reader", main.port)
    assert token.count(".") == 2
    since = len(auth.events())
    assert modern_call(main, "tools/list", token=token)[0] == 200
    assert events(auth, "introspection", since) == []


def test_the_rules_see_an_opaque_admins_role(main, auth):
    reader = token_for(auth, "svc-opaque-reader", main.port)
    admin = token_for(auth, "svc-opaque-admin", main.port)
    assert tool_call(main, "set_config", {"key": "a", "value": "b"}, token=reader)[0] == 403
    assert tool_call(main, "get_weather", {"city": "Oslo"}, token=admin)[0] == 200
    status, headers, _ = tool_call(main, "set_config", {"key": "a", "value": "b"}, token=admin)
    # The scope asked for, then the ones held (kept across the step-up).
    assert status == 403 and 'scope="mcp:write mcp:read"' in headers["www-authenticate"][0], \
        "the admin's role is read; its token was issued with mcp:read only"



def test_a_revoked_opaque_token_is_refused_after_the_cache_time(main, auth):
    token = token_for(auth, "svc-opaque-reader", main.port)
    assert modern_call(main, "tools/list", token=token)[0] == 200
    revoke(auth, "svc-opaque-reader", token)
    assert modern_call(main, "tools/list", token=token)[0] == 200, "the answer is reused until cache_seconds"
    refused = poll(lambda: modern_call(main, "tools/list", token=token)[0] == 401, CACHE_SECONDS + 10, interval=0.25)
    assert refused, "a revoked token is refused once the cached answer lapses"
    status, headers, _ = modern_call(main, "tools/list", token=token)
    assert 'error_description="token not active"' in headers["www-authenticate"][0]


def test_an_unknown_token_is_inactive(main):
    status, headers, _ = modern_call(main, "tools/list", token="made-up-opaque-token-xyz")
    assert status == 401
    assert 'error_description="token not active"' in headers["www-authenticate"][0]


def test_a_token_for_another_resource_is_refused(main, ports, auth, envoy_version):
    other = ports[(envoy_version, "burst")]
    token = token_for(auth, "svc-opaque-reader", other)
    status, headers, _ = modern_call(main, "tools/list", token=token)
    assert status == 401
    assert 'error_description="token audience not accepted"' in headers["www-authenticate"][0]


def test_one_introspection_per_token_under_concurrent_requests(envoy_version, ports, auth, mcp_server):
    with gateway(envoy_version, "burst", ports, auth, mcp_server.port, concurrency=2) as e:
        token = token_for(auth, "svc-opaque-reader", e.port)
        since = len(auth.events())
        results = []
        threads = [threading.Thread(target=lambda: results.append(modern_call(e, "tools/list", token=token)[0])) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 10
        assert len(events(auth, "introspection", since)) == 1, "one introspection per token per proxy"


def test_the_python_sdk_drives_a_flow_with_an_opaque_token(main, auth, mcp_server):
    mcp_server.clear()
    since = len(auth.events())
    scenario = {"name": "opaque", "flow": "client_credentials", "client_id": "svc-opaque-reader",
                "client_secret": "svc-opaque-reader-secret", "issuer": auth.issuer,
                "calls": [["get_weather", {"city": "Paris"}], ["set_config", {"key": "k", "value": "v"}]]}
    reports, _ = run_client("python-sdk-2", resource(main.port), [scenario])
    report = reports["opaque"]
    assert report["fatal"] is None, report["fatal"]
    assert report["http"][0]["status"] == 401, "the SDK started with no token"
    assert any(h["url"] == auth.issuer + "/token" and h["status"] == 200 for h in report["http"])
    assert [t["scope"] for t in report["tokens"]] == ["mcp:read mcp:write"], "scopes from the 401 hint"
    lists = [s for s in report["steps"] if s["step"] == "list_tools"]
    assert lists and lists[0]["tools"] == ["get_weather", "search"], "the list is filtered for the reader"
    get, set_ = [s for s in report["steps"] if s["step"] == "call"]
    assert get["ok"] is True and "Paris" in get["result"]["text"]
    assert set_["ok"] is False and set_["error"]["code"] == -32003
    called = [m["name"] for r in mcp_server.seen() for m in r["rpc"] if m["method"] == "tools/call"]
    assert called == ["get_weather"], "the refused call never reached the server"
    assert all(r["authorization"] is False for r in mcp_server.seen())
    assert len(events(auth, "introspection", since)) == 1, "one introspection for the whole session"


def test_the_gateway_may_authenticate_with_private_key_jwt(envoy_version, ports, auth, mcp_server):
    with gateway(envoy_version, "pkjwt", ports, auth, mcp_server.port, private_key_jwt=True) as e:
        token = token_for(auth, "svc-opaque-reader", e.port)
        since = len(auth.events())
        assert modern_call(e, "tools/list", token=token)[0] == 200
        [asked] = events(auth, "introspection", since)
        assert asked["client_id"] == "mcp-gateway-pkjwt" and asked["active"] is True
        assert [x for x in auth.events()[since:] if x.get("event") == "error"] == []


def test_a_dpop_bound_opaque_token_needs_its_proof(envoy_version, ports, auth, recording, main):
    """oidc-provider binds an opaque token to the client's key and says so in
    its introspection answer (`cnf.jkt`, `token_type` DPoP): the filter
    takes it only with the DPoP scheme and a fresh proof by that key."""
    key = DpopKey("ES256")
    with gateway(envoy_version, "dpop", ports, auth, recording.port, dpop="allowed") as e:
        token = token_for(auth, "svc-opaque-reader", e.port, dpop_key=key)
        assert "." not in token, "oidc-provider issued an opaque token"
        htu = resource(e.port)

        def send(scheme, proofs):
            headers = [("Authorization", f"{scheme} {token}")] + [("DPoP", p) for p in proofs]
            return post(e, LIST, headers=headers)

        since = len(auth.events())
        recording.clear()
        proof = key.proof("POST", htu, token=token)
        assert send("DPoP", [proof])[0] == 200
        [seen] = recording.requests
        assert "dpop" not in seen["headers"] and "authorization" not in seen["headers"]
        [asked] = events(auth, "introspection", since)
        assert asked["active"] is True
        refusals = [
            (send("DPoP", [proof]), "invalid_dpop_proof"),  # the same proof again
            (send("DPoP", []), "invalid_dpop_proof"),
            (send("DPoP", [DpopKey("ES256").proof("POST", htu, token=token)]), "invalid_token"),
            (send("Bearer", []), "invalid_token"),  # the downgrade
        ]
        for (status, headers, body), error in refusals:
            assert status == 401, body
            assert f'error="{error}"' in " ".join(headers["www-authenticate"]), headers
        assert send("DPoP", [key.proof("POST", htu, token=token)])[0] == 200
        assert len(events(auth, "introspection", since)) == 1, "the answer is reused; the proof never is"
        counters = e.counters()
        assert counters["dpop.accepted"] == 2
        assert counters["invalid_token.dpop_bound"] == 1
    # Where `dpop` is off, the DPoP scheme is refused before any call.
    since = len(auth.events())
    status, headers, _ = post(main, LIST, headers=[("Authorization", f"DPoP {token}")])
    assert status == 401 and "authorization scheme not accepted" in headers["www-authenticate"][0]
    assert events(auth, "introspection", since) == []


# --- token exchange -----------------------------------------------------------------


def test_exchange_gives_the_upstream_a_token_for_its_audience(envoy_version, ports, auth, recording):
    with gateway(envoy_version, "exchange", ports, auth, recording.port,
                 upstream_token={"audience": "downstream-api"}) as e:
        for client_id in ["svc-reader", "svc-opaque-reader"]:
            token = token_for(auth, client_id, e.port)
            recording.clear()
            since = len(auth.events())
            for _ in range(2):
                assert post(e, LIST, token)[0] == 200
            first, second = recording.requests
            issued = first["headers"]["authorization"].removeprefix("Bearer ")
            assert second["headers"]["authorization"] == first["headers"]["authorization"], "reused"
            claims = jwt_claims(issued)
            assert claims["aud"] == "downstream-api" and claims["sub"] == client_id
            assert claims["act"] == {"sub": "mcp-gateway"}
            assert token not in json.dumps(recording.requests), "never the caller's token"
            exchanges = events(auth, "exchange", since)
            assert [x["audience"] for x in exchanges] == ["downstream-api"], "one exchange, then reuse"


@pytest.mark.parametrize("role,upstream_token,status", [
    ("refused", {"audience": "payroll-api"}, 502),
    ("misissued", {"audience": "misissued-api"}, 502),
    ("down", {"audience": "downstream-api", "cluster": "dead"}, 503),
], ids=["audience-not-allowed", "token-for-the-wrong-audience", "server-down"])
def test_a_failed_exchange_forwards_nothing(envoy_version, ports, auth, recording, role, upstream_token, status):
    with gateway(envoy_version, role, ports, auth, recording.port, upstream_token=upstream_token) as e:
        token = token_for(auth, "svc-reader", e.port)
        recording.clear()
        got, headers, body = post(e, LIST, token)
        assert got == status, body
        assert json.loads(body)["error"]["code"] == -32007
        assert recording.requests == [], "nothing forwarded without the token the operator asked for"
        if status == 503:
            assert headers["retry-after"] == ["5"]
        assert token not in e.logs() and GATEWAY_SECRET not in e.logs()
