"""README "Opaque tokens: introspection" and its failure behaviour, in a real
Envoy with the built filter, against an authorization server the test
scripts (`authorization_server.py`): an opaque token accepted and mapped
like a JWT, one call per token reused by every later request (and by
concurrent ones, across workers), refusals (inactive, wrong audience or
issuer, not a bearer token), and every way the server can fail — down,
slow, reset, garbage, duplicate keys, `"active": "true"`, a redirect, a huge
answer — answered 503 with `Retry-After`, nothing forwarded. Introspected
claims meet the scope hierarchy and rule conditions as a JWT's do, and an
answer binding the token to a DPoP key (`cnf.jkt`) needs a proof by that key
on every request, where the provider takes DPoP. The client secret comes
from the VM's environment, never from the configuration text, and shows in
no log."""

import json
import threading

import pytest

import harness
from authorization_server import INTROSPECT_PATH, Reply, ScriptedAuthorizationServer, active
from configs import ISSUER, RESOURCE, SCOPES, base_config
from dpop_client import DpopKey
from harness import Envoy, free_port
from mcp_client import LIST, assert_allowed, assert_invalid_token, call, post
from tokens import RsaKey, claims, jwks

SECRET = "gw-secret-Zq8"
SECRET_ENV = "MCP_AUTHZ_INTROSPECTION_SECRET"
KEY = RsaKey("k1")
RULES = [
    {"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]},
    {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"],
     "roles": ["reader"], "scopes": ["mcp:read"]},
    {"name": "acme readers", "effect": "allow", "methods": ["tools/call"], "names": ["tenant_*"],
     "when": "token.claims.tenant == 'acme' && 'mcp:read' in token.scopes"},
]


def introspection(port, **extra):
    config = {"cluster": "as", "url": f"http://127.0.0.1:{port}{INTROSPECT_PATH}", "client_id": "mcp-gateway",
              "client_secret_env": SECRET_ENV, "timeout_ms": 500, "cache_seconds": 60, **extra}
    return {k: v for k, v in config.items() if v is not None}


def plugin(port, with_jwks=False, dpop=None, **extra):
    provider = {"issuer": ISSUER, "roles_claims": ["realm_access.roles"],
                "introspection": introspection(port, **extra)}
    if with_jwks:
        provider["jwks"] = {"inline": jwks(KEY)}
    if dpop:
        provider["dpop"] = dpop
    return base_config([provider], RULES, scopes_supported=SCOPES,
                       scope_implies={"mcp:write": ["mcp:read"]},
                       identity_headers={"x-mcp-subject": "sub", "x-mcp-roles": "$roles",
                                         "x-mcp-scopes": "$scopes"})


def filter_with_secret(config, env=None):
    """The filter as the README wires it, with the client secret handed to
    the VM as an environment variable (Envoy `vm_config.environment_variables`)."""
    f = harness.wasm_filter(config)
    f["typed_config"]["config"]["vm_config"]["environment_variables"] = {
        "key_values": env if env is not None else {SECRET_ENV: SECRET}}
    return f


def envoy(version, upstream, as_port, concurrency=1, cluster_port=None, **config):
    c = plugin(as_port, **config)
    return Envoy(version, c, upstream.port, clusters=[harness.cluster("as", cluster_port or as_port)],
                 filters=[filter_with_secret(c)], concurrency=concurrency)


@pytest.fixture(scope="module")
def server():
    s = ScriptedAuthorizationServer(ISSUER)
    yield s
    s.close()


@pytest.fixture(scope="module")
def e(envoy_version, upstream, server):
    with envoy(envoy_version, upstream, server.port) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server, upstream):
    server.clear()
    server.introspect.clear()
    upstream.clear()


def unique(name):
    """A token no earlier test has used (answers are cached per token)."""
    unique.n += 1
    return f"opaque-{name}-{unique.n}-Kx9"


unique.n = 0


def assert_unavailable(result, upstream):
    status, headers, body = result
    assert status == 503, (status, body)
    assert headers["retry-after"] == ["5"]
    assert json.loads(body)["error"]["code"] == -32006
    assert upstream.requests == [], "nothing is forwarded while the token's verdict is unknown"


# --- accepted, mapped, cached -------------------------------------------------


def test_opaque_token_is_introspected_and_mapped_to_roles(e, server, upstream):
    token = unique("reader")
    server.introspect[token] = Reply(200, active(ISSUER, RESOURCE, sub="alice", roles=["reader"]))
    body = call("get_weather", city="Oslo")
    assert_allowed(post(e, body, token), upstream, body)
    seen = upstream.requests[0]["headers"]
    assert "authorization" not in seen, "the caller's token never goes upstream"
    assert seen["x-mcp-subject"] == "alice"
    assert seen["x-mcp-roles"] == "reader"
    assert seen["x-mcp-scopes"] == "mcp:read"
    [asked] = server.calls_to(INTROSPECT_PATH)
    assert asked["form"] == {"token": token, "token_type_hint": "access_token"}
    assert asked["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert asked["headers"]["authorization"].startswith("Basic ")


def test_the_answer_is_reused_until_cache_seconds(e, server, upstream):
    token = unique("cached")
    server.introspect[token] = Reply(200, active(ISSUER, RESOURCE))
    before = e.counters()
    for _ in range(3):
        assert post(e, LIST, token)[0] == 200
    assert len(server.calls_to(INTROSPECT_PATH)) == 1
    after = e.counters()
    assert after["introspection.call"] - before["introspection.call"] == 1
    assert after["introspection.cache_hit"] - before["introspection.cache_hit"] == 2


def test_rules_see_the_introspected_roles_and_scopes(e, server, upstream):
    token = unique("noscope")
    server.introspect[token] = Reply(200, active(ISSUER, RESOURCE, scope=""))
    status, headers, _ = post(e, call("get_weather"), token)
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"][0]
    assert upstream.requests == []


def test_the_scope_hierarchy_holds_for_introspected_tokens(e, server, upstream):
    token = unique("writer")
    server.introspect[token] = Reply(200, active(ISSUER, RESOURCE, scope="mcp:write"))
    body = call("get_weather", city="Oslo")
    assert_allowed(post(e, body, token), upstream, body)  # mcp:write implies mcp:read


def test_conditions_read_the_introspected_claims(e, server, upstream):
    """`token.claims` and `token.scopes` (implied ones included) are filled
    from the introspection answer."""
    acme, other = unique("acme"), unique("other")
    server.introspect[acme] = Reply(200, active(ISSUER, RESOURCE, scope="mcp:write", tenant="acme"))
    server.introspect[other] = Reply(200, active(ISSUER, RESOURCE, scope="mcp:write", tenant="globex"))
    body = call("tenant_report")
    assert_allowed(post(e, body, acme), upstream, body)
    upstream.clear()
    status, _, _ = post(e, body, other)
    assert status == 403
    assert upstream.requests == []


# --- refused -------------------------------------------------------------------


@pytest.mark.parametrize("answer,description", [
    ({"active": False}, "token not active"),
    (active(ISSUER, "https://other.example.com/mcp"), "token audience not accepted"),
    ({k: v for k, v in active(ISSUER, RESOURCE).items() if k != "aud"}, "token audience not accepted"),
    (active("https://evil.example.com", RESOURCE), "token issuer not accepted"),
    (active(ISSUER, RESOURCE, token_type="refresh_token"), "token type not accepted"),
    # Accepted as an answer, so its `exp` is checked: these answers are made
    # when the tests are collected, and this one must still be good when it
    # runs, however long the run.
    (active(ISSUER, RESOURCE, ttl=7 * 86400, cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
     "token is bound to a key: send it with the DPoP scheme and a proof"),
    (active(ISSUER, RESOURCE, token_type="DPoP"), "token type not accepted"),
    (active(ISSUER, RESOURCE, cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
     "token type not accepted"),
    (active(ISSUER, RESOURCE, ttl=-120), "token expired"),
], ids=["inactive", "wrong-audience", "no-audience", "wrong-issuer", "refresh-token", "dpop-bound-as-bearer",
        "dpop-without-key", "mtls-bound", "expired"])
def test_refused_answers_are_401(e, server, upstream, answer, description):
    token = unique("refused")
    server.introspect[token] = Reply(200, answer)
    assert_invalid_token(post(e, LIST, token), upstream, description, secret=token)


@pytest.mark.parametrize("mode", ["allowed", "required"])
def test_a_dpop_bound_opaque_token_needs_a_proof_by_its_key(envoy_version, upstream, server, mode):
    """An answer with `cnf.jkt` binds the token as a JWT's `cnf.jkt` does:
    the DPoP scheme and a fresh proof by that key, on every request, the
    answer reused but never the proof; a bearer token, another key's proof,
    a replayed proof or none are refused, and so is an unbound token with
    the DPoP scheme."""
    key = DpopKey("ES256")
    bound, unbound = unique(f"bound-{mode}"), unique(f"unbound-{mode}")
    server.introspect[bound] = Reply(200, active(ISSUER, RESOURCE, token_type="DPoP", cnf={"jkt": key.jkt}))
    server.introspect[unbound] = Reply(200, active(ISSUER, RESOURCE))
    with envoy(envoy_version, upstream, server.port, dpop=mode) as bound_envoy:
        upstream.clear()

        def send(scheme, token, proofs):
            headers = [("Authorization", f"{scheme} {token}")] + [("DPoP", p) for p in proofs]
            return post(bound_envoy, LIST, headers=headers)

        proof = key.proof("POST", RESOURCE, token=bound)
        assert send("DPoP", bound, [proof])[0] == 200
        [seen] = upstream.requests
        assert "dpop" not in seen["headers"] and "authorization" not in seen["headers"]
        upstream.clear()
        refusals = [
            (send("DPoP", bound, [proof]), "invalid_dpop_proof"),  # the same proof again
            (send("DPoP", bound, []), "invalid_dpop_proof"),
            (send("DPoP", bound, [DpopKey("ES256").proof("POST", RESOURCE, token=bound)]), "invalid_token"),
            (send("Bearer", bound, [key.proof("POST", RESOURCE, token=bound)]), "invalid_token"),
            (send("DPoP", unbound, [key.proof("POST", RESOURCE, token=unbound)]), "invalid_token"),
        ]
        for (status, headers, body), error in refusals:
            assert status == 401, body
            assert f'error="{error}"' in " ".join(headers["www-authenticate"]), headers
        assert upstream.requests == [], "nothing of a refused request goes upstream"
        assert send("DPoP", bound, [key.proof("POST", RESOURCE, token=bound)])[0] == 200
        # As a bearer token, an unbound token passes only where bearer
        # tokens are taken; where DPoP is required it is refused unasked.
        assert send("Bearer", unbound, [])[0] == (200 if mode == "allowed" else 401)
        asked = [c["form"]["token"] for c in server.calls_to(INTROSPECT_PATH)]
        assert asked.count(bound) == 1, "the answer is reused; the proof never is"
        assert asked.count(unbound) == 1
        counters = bound_envoy.counters()
        assert counters["dpop.accepted"] == 2
        assert counters["invalid_token.key_binding"] == 2
        assert counters["invalid_dpop_proof.replay"] == 1
        assert counters["invalid_dpop_proof.missing"] == 1
        if mode == "allowed":
            assert counters["invalid_token.dpop_bound"] == 1
        else:
            # Where DPoP is required, the bearer scheme is refused before
            # any call.
            assert counters["invalid_token.scheme"] == 2


def test_a_refusal_is_remembered_briefly(e, server, upstream):
    token = unique("inactive")
    server.introspect[token] = Reply(200, {"active": False})
    for _ in range(2):
        assert post(e, LIST, token)[0] == 401
    assert len(server.calls_to(INTROSPECT_PATH)) == 1


# --- the authorization server misbehaving: 503, nothing forwarded --------------


@pytest.mark.parametrize("reply", [
    Reply(500, {"error": "server_error"}),
    Reply(401, {"error": "invalid_client"}),
    Reply(302, b"", headers={"location": "http://127.0.0.1:1/introspect"}),
    Reply(200, b"<html>not json</html>", content_type="text/html"),
    Reply(200, b'{"active": true'),
    Reply(200, {"active": "true", "aud": RESOURCE, "exp": 9999999999}),
    Reply(200, b'{"active": false, "active": true, "aud": "' + RESOURCE.encode() + b'", "exp": 9999999999}'),
    Reply(200, json.dumps({**active(ISSUER, RESOURCE), "pad": "x" * 100_000}).encode()),
    Reply(200, json.dumps({**active(ISSUER, RESOURCE), "pad": "x" * 5_000_000}).encode()),
    Reply(200, json.dumps([active(ISSUER, RESOURCE)]).encode()),
    Reply(200, active(ISSUER, RESOURCE), headers={"content-encoding": "gzip"}),
    Reply(200, active(ISSUER, RESOURCE), content_type=None),
    Reply(200, active(ISSUER, RESOURCE), delay=1.5),
    Reply(reset=True),
], ids=["500", "401-bad-client", "redirect", "html", "truncated", "active-as-string",
        "duplicate-active", "huge", "5-mib", "array", "claims-gzip", "no-content-type", "slow", "reset"])
def test_misbehaving_server_gets_503_and_nothing_is_forwarded(e, server, upstream, reply):
    token = unique("fault")
    server.introspect[token] = reply
    before = e.counters()
    assert_unavailable(post(e, LIST, token), upstream)
    after = e.counters()
    assert after["denied.introspection_unavailable"] - before["denied.introspection_unavailable"] == 1
    assert after["introspection.failed"] - before["introspection.failed"] == 1
    assert token not in e.logs(), "the log names the failure, never the token"


def test_server_down_gets_503(envoy_version, upstream):
    with envoy(envoy_version, upstream, free_port()) as down:
        upstream.clear()
        assert_unavailable(post(down, LIST, unique("down")), upstream)
        assert down.counters()["introspection.failed"] == 1


# --- one call per token --------------------------------------------------------


def test_concurrent_requests_for_one_token_make_one_call(envoy_version, upstream, server):
    token = unique("burst")
    server.introspect[token] = Reply(200, active(ISSUER, RESOURCE), delay=0.3)
    with envoy(envoy_version, upstream, server.port, concurrency=2) as two:
        upstream.clear()
        results = []

        def one():
            results.append(post(two, LIST, token)[0])

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 8
        assert len(server.calls_to(INTROSPECT_PATH)) == 1, "one introspection per token per proxy"
        counters = two.counters()
        assert counters["introspection.call"] == 1
        # Each of the others waited for that call or came after it, and
        # took its answer.
        assert counters["introspection.cache_hit"] == 7
        assert counters["introspection.wait"] <= 7


# --- JWTs, and where the secret lives --------------------------------------------


def test_a_jwt_of_a_provider_with_keys_keeps_the_local_path(envoy_version, upstream, server):
    with envoy(envoy_version, upstream, server.port, with_jwks=True) as both:
        upstream.clear()
        jwt = KEY.sign(claims(ISSUER, RESOURCE))
        assert_allowed(post(both, LIST, jwt), upstream)
        opaque = unique("both")
        server.introspect[opaque] = Reply(200, active(ISSUER, RESOURCE))
        assert post(both, LIST, opaque)[0] == 200
        assert [c["form"]["token"] for c in server.calls_to(INTROSPECT_PATH)] == [opaque]


def test_the_client_secret_comes_from_the_vm_environment_and_is_never_logged(e, server, upstream):
    token = unique("secret")
    server.introspect[token] = Reply(200, {"active": False})
    post(e, LIST, token)
    import base64
    [asked] = server.calls_to(INTROSPECT_PATH)
    basic = base64.b64decode(asked["headers"]["authorization"].split()[1]).decode()
    assert basic == f"mcp-gateway:{SECRET}"
    assert SECRET not in e.logs()
    assert SECRET not in json.dumps(plugin(server.port)), "the configuration text holds no secret"


def test_a_missing_secret_variable_refuses_the_configuration(envoy_version, upstream, server):
    c = plugin(server.port)
    with pytest.raises(harness.EnvoyExited) as exited:
        Envoy(envoy_version, c, upstream.port, clusters=[harness.cluster("as", server.port)],
              filters=[filter_with_secret(c, env={})]).start()
    assert f"environment variable \\\"{SECRET_ENV}\\\"" in exited.value.logs or \
        f'environment variable "{SECRET_ENV}"' in exited.value.logs


# --- shapes found by attacking it -------------------------------------------------


def test_an_oversized_opaque_token_is_refused_without_a_call(e, server, upstream):
    token = "A" * (16 * 1024 + 1)
    status, headers, _ = post(e, LIST, token)
    assert status == 401
    assert 'error_description="token malformed"' in headers["www-authenticate"][0]
    assert server.calls_to(INTROSPECT_PATH) == [], "the authorization server never sees it"


def test_a_client_that_goes_away_mid_call_does_not_stall_the_others(envoy_version, upstream, server):
    """The first request for a token claims its call and disconnects while
    the call is under way; the next request for that token must not wait for
    the abandoned claim's whole lease (three timeouts)."""
    import socket
    import time
    token = unique("abandoned")
    answers = iter([Reply(200, active(ISSUER, RESOURCE), delay=1.0)])
    server.introspect[token] = lambda call: next(answers, Reply(200, active(ISSUER, RESOURCE)))
    with envoy(envoy_version, upstream, server.port, timeout_ms=10_000) as slow:
        upstream.clear()
        body = json.dumps(LIST).encode()
        gone = socket.create_connection(("127.0.0.1", slow.port))
        gone.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert harness.poll(lambda: len(server.calls_to(INTROSPECT_PATH)) == 1, 5)
        gone.close()
        time.sleep(0.2)
        # Without the claim given back, this would wait some 30 s.
        status, _, _ = post(slow, LIST, token, timeout=8)
        assert status == 200


def test_the_secret_may_come_from_envoys_own_environment(envoy_version, upstream, server, monkeypatch):
    """`host_env_keys`: the variable is Envoy's (a Kubernetes Secret set on
    the container), passed on to the VM by name."""
    monkeypatch.setenv(SECRET_ENV, "from-the-container-env")
    c = plugin(server.port)
    f = harness.wasm_filter(c)
    f["typed_config"]["config"]["vm_config"]["environment_variables"] = {"host_env_keys": [SECRET_ENV]}
    with Envoy(envoy_version, c, upstream.port, clusters=[harness.cluster("as", server.port)],
               filters=[f]) as host_env:
        token = unique("hostenv")
        server.introspect[token] = Reply(200, {"active": False})
        post(host_env, LIST, token)
        import base64
        [asked] = server.calls_to(INTROSPECT_PATH)
        basic = base64.b64decode(asked["headers"]["authorization"].split()[1]).decode()
        assert basic == "mcp-gateway:from-the-container-env"


def test_private_key_jwt_authenticates_with_a_signed_assertion(envoy_version, upstream, server):
    """`client_auth: private_key_jwt`: the key comes from the VM's
    environment; the authorization server sees an ES256 assertion by the
    client, for its issuer, that verifies with the client's public key."""
    import jwt as pyjwt
    from tokens import EcKey
    key = EcKey("gw-key-1")
    number = key.private.private_numbers().private_value
    private_jwk = {**key.jwk, "d": base64url(number.to_bytes(32, "big"))}
    c = plugin(server.port, client_auth="private_key_jwt", client_key_env="MCP_AUTHZ_CLIENT_KEY",
               client_secret_env=None)
    f = harness.wasm_filter(c)
    f["typed_config"]["config"]["vm_config"]["environment_variables"] = {
        "key_values": {"MCP_AUTHZ_CLIENT_KEY": json.dumps(private_jwk)}}
    with Envoy(envoy_version, c, upstream.port, clusters=[harness.cluster("as", server.port)],
               filters=[f]) as signed:
        upstream.clear()
        tokens = [unique("pkjwt"), unique("pkjwt")]
        for token in tokens:
            server.introspect[token] = Reply(200, active(ISSUER, RESOURCE))
            assert post(signed, LIST, token)[0] == 200
        calls = server.calls_to(INTROSPECT_PATH)
        assert len(calls) == 2
        jtis = set()
        for asked in calls:
            form = asked["form"]
            assert "authorization" not in asked["headers"] and "client_secret" not in form
            assert form["client_id"] == "mcp-gateway"
            assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            assertion = form["client_assertion"]
            assert pyjwt.get_unverified_header(assertion) == {"alg": "ES256", "typ": "JWT", "kid": "gw-key-1"}
            claims = pyjwt.decode(assertion, key.private.public_key(), algorithms=["ES256"], audience=ISSUER)
            assert claims["iss"] == claims["sub"] == "mcp-gateway"
            assert claims["exp"] - claims["iat"] == 60
            jtis.add(claims["jti"])
        assert len(jtis) == 2, "every assertion has its own jti"
        assert private_jwk["d"] not in signed.logs()


def base64url(raw):
    import base64
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
