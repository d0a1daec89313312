"""Contract sections 3 (providers), 4.3-4.4, 4.8 and the token rows of
section 5, in a real Envoy with the built filter: token verification with
inline keys, the identity the upstream sees, remote keys fetched through an
Envoy cluster (discovery, rotation, outages, one fetch per Envoy) and the
counters that show it."""

import base64
import hashlib
import hmac
import http.client
import json
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization

import harness
from configs import ISSUER, METADATA_URL, RESOURCE, SCOPES, base_config
from harness import Envoy, read_response
from jwks_server import JwksServer
from tokens import EcKey, RsaKey, claims, jwks

OTHER_ISSUER = "https://other.example.com/realms/other"
KEY = RsaKey("k1")
EC_KEY = EcKey("e1")
OTHER_KEY = RsaKey("other-1")
ROGUE_KEY = RsaKey("k1")  # same kid as KEY, different key
KEY_A = RsaKey("rot-a")
KEY_B = RsaKey("rot-b")

LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
STATS = "wasmcustom.mcp_authz."

IDENTITY_HEADERS = {"x-mcp-subject": "sub", "x-mcp-roles": "$roles",
                    "x-mcp-scopes": "$scopes", "x-mcp-client-id": "client_id"}
KEYCLOAK_ROLES = ["realm_access.roles", "resource_access.mcp-server.roles"]


def config(providers, **overrides):
    return base_config(providers, [{"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]}],
                       scopes_supported=SCOPES) | overrides


def inline_config(**overrides):
    return config([
        {"issuer": ISSUER, "jwks": {"inline": jwks(KEY, EC_KEY)}, "roles_claims": KEYCLOAK_ROLES,
         "clock_skew_seconds": 60},
        {"issuer": OTHER_ISSUER, "jwks": {"inline": jwks(OTHER_KEY)}},
    ], identity_headers=IDENTITY_HEADERS, **overrides)


def remote_config(server, **remote):
    r = {"cluster": "idp", "url": f"{server.url}/certs", **remote}
    return config([{"issuer": ISSUER, "jwks": {"remote": r}}])


def remote_envoy(version, upstream, server, concurrency=1, **kwargs):
    return Envoy(version, remote_config(server, **kwargs), upstream.port,
                 clusters=[harness.cluster("idp", server.port)], concurrency=concurrency)


# --- requests and assertions ------------------------------------------------

def call(envoy, token=None, authorization=None, extra_headers=(), timeout=10):
    """POSTs tools/list. `authorization` is a list of raw header values
    (default: one `Bearer <token>`)."""
    if authorization is None:
        authorization = [] if token is None else [f"Bearer {token}"]
    headers = [("Content-Type", "application/json")]
    headers += [("Authorization", a) for a in authorization]
    headers += list(extra_headers)
    return raw_request(envoy.port, "POST", "/mcp", json.dumps(LIST).encode(), headers, timeout)


def raw_request(port, method, path, body, headers, timeout=10):
    """Like harness.request, but headers are a list, so a name may repeat."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return read_response(conn)
    finally:
        conn.close()


def assert_allowed(result, upstream):
    status, _, body = result
    assert status == 200, body
    assert len(upstream.requests) == 1 and upstream.requests[0]["path"] == "/mcp", upstream.requests
    assert json.loads(upstream.requests[0]["body"]) == LIST


def assert_invalid_token(result, upstream, description, secret=None):
    status, headers, body = result
    assert status == 401, (status, body)
    challenge = headers["www-authenticate"]
    assert challenge == [
        f'Bearer error="invalid_token", error_description="{description}", '
        f'resource_metadata="{METADATA_URL}", scope="mcp:read mcp:write"'], challenge
    err = json.loads(body)
    assert err["error"]["code"] == -32001
    if secret:
        for part in [secret] + secret.split("."):
            if len(part) >= 8:
                assert part.encode() not in body, "the token is never echoed"
                assert all(part not in v for vs in headers.values() for v in vs)
    assert upstream.requests == [], "a refused request never reaches the upstream"


def assert_keys_unavailable(result, upstream):
    status, headers, body = result
    assert status == 503, (status, body)
    assert headers.get("retry-after"), headers
    assert int(headers["retry-after"][0]) > 0
    assert json.loads(body)["error"]["code"] == -32002
    assert upstream.requests == []


def hs256_with_public_key(key, payload):
    """An HS256 token keyed with the RSA public key's PEM bytes (the classic
    algorithm-confusion forgery); built by hand, PyJWT refuses to sign it."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = b64json({"alg": "HS256", "typ": "JWT", "kid": key.kid}) + "." + b64json(payload)
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(obj):
    return b64(json.dumps(obj).encode())


def good_claims(**extra):
    return claims(ISSUER, RESOURCE, **extra)


def counters(envoy):
    return {k[len(STATS):]: v for k, v in envoy.stats().items() if k.startswith(STATS)}


def poll(check, timeout, interval=0.1):
    """Calls `check` until it returns something truthy or `timeout` runs out."""
    deadline = time.time() + timeout
    while True:
        result = check()
        if result or time.time() >= deadline:
            return result
        time.sleep(interval)


# --- 1. inline keys ------------------------------------------------------------

@pytest.fixture(scope="module")
def envoy(envoy_version, upstream):
    with Envoy(envoy_version, inline_config(), upstream.port) as e:
        yield e


def test_valid_rs256_token_is_accepted_and_reaches_upstream(envoy, upstream):
    upstream.clear()
    assert_allowed(call(envoy, KEY.sign(good_claims())), upstream)


def test_valid_es256_token_is_accepted(envoy, upstream):
    upstream.clear()
    assert_allowed(call(envoy, EC_KEY.sign(good_claims())), upstream)


def test_audience_list_containing_the_resource_is_accepted(envoy, upstream):
    upstream.clear()
    token = KEY.sign(good_claims(aud=["account", RESOURCE, "https://other.example.com"]))
    assert_allowed(call(envoy, token), upstream)


def test_token_expired_within_clock_skew_is_accepted(envoy, upstream):
    upstream.clear()
    now = int(time.time())
    token = KEY.sign(good_claims(iat=now - 600, exp=now - 30))
    assert_allowed(call(envoy, token), upstream)


def _tampered():
    token = KEY.sign(good_claims(sub="user-1"))
    header, _, signature = token.split(".")
    return f"{header}.{b64json(good_claims(sub='admin'))}.{signature}"


def _alg_none():
    return f"{b64json({'alg': 'none', 'kid': KEY.kid})}.{b64json(good_claims())}."


REJECTED = [
    # (id, token factory, error_description)
    ("expired", lambda: KEY.sign(good_claims(iat=int(time.time()) - 900,
                                             exp=int(time.time()) - 120)), "token expired"),
    ("nbf_in_future", lambda: KEY.sign(good_claims(nbf=int(time.time()) + 300)), "token not yet valid"),
    ("iat_in_future", lambda: KEY.sign(good_claims(iat=int(time.time()) + 300)), "token not yet valid"),
    ("wrong_issuer", lambda: KEY.sign(claims("https://evil.example.com/realms/mcp", RESOURCE)),
     "token issuer not accepted"),
    ("wrong_audience", lambda: KEY.sign(claims(ISSUER, "https://other.example.com/mcp")),
     "token audience not accepted"),
    ("audience_list_without_resource", lambda: KEY.sign(claims(ISSUER, ["account", "https://x.example"])),
     "token audience not accepted"),
    ("alg_none", _alg_none, "algorithm not accepted"),
    ("hs256_keyed_with_rsa_public_key", lambda: hs256_with_public_key(KEY, good_claims()),
     "algorithm not accepted"),
    ("unknown_kid", lambda: RsaKey("nobody").sign(good_claims()), "unknown signing key"),
    ("kid_of_another_issuers_key", lambda: OTHER_KEY.sign(good_claims()), "unknown signing key"),
    ("signed_by_another_key_with_same_kid", lambda: ROGUE_KEY.sign(good_claims()), "signature invalid"),
    ("exp_as_string", lambda: KEY.sign(good_claims(exp=str(int(time.time()) + 300))), "token malformed"),
    ("tampered_payload", _tampered, "signature invalid"),
    ("token_of_20_kib", lambda: KEY.sign(good_claims(pad="x" * 20 * 1024)), "token malformed"),
]


@pytest.mark.parametrize("make_token,description", [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_rejected_token_gets_401_invalid_token_with_its_description(envoy, upstream, make_token, description):
    upstream.clear()
    token = make_token()
    assert_invalid_token(call(envoy, token), upstream, description, secret=token)


def test_two_authorization_headers_are_refused(envoy, upstream):
    upstream.clear()
    token = KEY.sign(good_claims())
    result = call(envoy, authorization=[f"Bearer {token}", f"Bearer {token}"])
    assert_invalid_token(result, upstream, "token malformed", secret=token)


def test_basic_scheme_is_refused(envoy, upstream):
    upstream.clear()
    secret = base64.b64encode(b"alice:correct horse battery staple").decode()
    result = call(envoy, authorization=[f"Basic {secret}"])
    assert_invalid_token(result, upstream, "token malformed", secret=secret)


# --- 2. identity reaches the upstream --------------------------------------------

def keycloak_token(**extra):
    return KEY.sign(good_claims(
        sub="alice", roles=["reader", "offline_access"], scope="mcp:read mcp:write",
        resource_access={"mcp-server": {"roles": ["admin", "reader"]},
                         "account": {"roles": ["manage-account"]}},
        **extra))


def test_identity_headers_reach_upstream_and_client_sent_ones_are_replaced(envoy, upstream):
    upstream.clear()
    result = call(envoy, keycloak_token(), extra_headers=[
        ("X-MCP-Subject", "admin"), ("x-mcp-roles", "superuser"), ("x-mcp-client-id", "forged")])
    assert_allowed(result, upstream)
    seen = upstream.requests[0]
    assert seen["headers"]["x-mcp-subject"] == "alice"
    assert seen["headers"]["x-mcp-roles"] == "reader offline_access admin"
    assert seen["headers"]["x-mcp-scopes"] == "mcp:read mcp:write"
    assert seen["headers"]["x-mcp-client-id"] == "test-client"
    for name in IDENTITY_HEADERS:
        assert [n for n, _ in seen["header_list"]].count(name) == 1, seen["header_list"]
    assert "authorization" not in seen["headers"], "the token is stripped by default"


def test_token_is_forwarded_when_configured(envoy_version, upstream):
    token = keycloak_token()
    with Envoy(envoy_version, inline_config(token_forwarding="forward"), upstream.port) as e:
        upstream.clear()
        assert_allowed(call(e, token), upstream)
        assert upstream.requests[0]["headers"]["authorization"] == f"Bearer {token}"
        assert upstream.requests[0]["headers"]["x-mcp-subject"] == "alice"


# --- 4. counters (inline part) ----------------------------------------------------

def test_counters_count_invalid_tokens_and_cache_hits(envoy, upstream):
    before = counters(envoy)
    print("counters:", sorted(before))
    for name in ["allowed", "denied.invalid_token", "invalid_token.expired",
                 "token_cache.hit", "token_cache.miss", "jwks_fetch.ok", "jwks_fetch.failed"]:
        assert name in before, f"{STATS}{name} is not in Envoy's stats: {sorted(before)}"

    upstream.clear()
    expired = KEY.sign(good_claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200))
    assert_invalid_token(call(envoy, expired), upstream, "token expired")
    token = KEY.sign(good_claims(sub="cache-me"))
    for _ in range(3):
        upstream.clear()
        assert_allowed(call(envoy, token), upstream)
    after = counters(envoy)
    delta = {k: after[k] - before.get(k, 0) for k in after}
    assert delta["denied.invalid_token"] == 1
    assert delta["invalid_token.expired"] == 1
    assert delta["allowed"] == 3
    assert delta["token_cache.miss"] == 1
    assert delta["token_cache.hit"] == 2
    assert after["jwks_fetch.ok"] == 0 and after["jwks_fetch.failed"] == 0, "inline keys fetch nothing"


# --- 3. remote keys through an Envoy cluster -----------------------------------------

@pytest.fixture
def idp():
    server = JwksServer(jwks(KEY))
    yield server
    server.stop()


def test_token_verified_with_keys_fetched_from_remote_jwks(envoy_version, upstream, idp):
    with remote_envoy(envoy_version, upstream, idp) as e:
        upstream.clear()
        assert_allowed(call(e, KEY.sign(good_claims())), upstream)
        upstream.clear()
        forged = ROGUE_KEY.sign(good_claims())
        assert_invalid_token(call(e, forged), upstream, "signature invalid", secret=forged)
        stats = counters(e)
        assert stats["jwks_fetch.ok"] == 1 and stats["jwks_fetch.failed"] == 0, stats
        assert idp.count("/certs") == 1


DISCOVERY_CASES = ["rfc8414", "openid", "foreign"]
RFC8414_PATH = "/.well-known/oauth-authorization-server/realms/mcp"
OPENID_PATH = "/realms/mcp/.well-known/openid-configuration"


@pytest.fixture(scope="module")
def discovery(envoy_version, upstream):
    """One Envoy, three issuers without a configured JWKS URL, each on its
    own server: one with RFC 8414 metadata, one with only OpenID discovery,
    one whose metadata names another issuer."""
    servers = {case: JwksServer(jwks(KEY)) for case in DISCOVERY_CASES}
    issuers = {case: f"{server.url}/realms/mcp" for case, server in servers.items()}
    servers["rfc8414"].documents[RFC8414_PATH] = {
        "issuer": issuers["rfc8414"], "jwks_uri": f"{servers['rfc8414'].url}/certs"}
    servers["openid"].documents[OPENID_PATH] = {
        "issuer": issuers["openid"], "jwks_uri": f"{servers['openid'].url}/certs"}
    for path in [RFC8414_PATH, OPENID_PATH]:
        servers["foreign"].documents[path] = {
            "issuer": "https://evil.example.com", "jwks_uri": f"{servers['foreign'].url}/certs"}
    providers = [{"issuer": issuers[case],
                  "jwks": {"remote": {"cluster": f"idp-{case}", "timeout_ms": 500}}}
                 for case in DISCOVERY_CASES]
    clusters = [harness.cluster(f"idp-{case}", servers[case].port) for case in DISCOVERY_CASES]
    try:
        with Envoy(envoy_version, config(providers), upstream.port, clusters=clusters) as e:
            yield e, servers, issuers
    finally:
        for server in servers.values():
            server.stop()


def test_jwks_uri_discovered_from_rfc8414_metadata(discovery, upstream):
    e, servers, issuers = discovery
    upstream.clear()
    assert_allowed(call(e, KEY.sign(claims(issuers["rfc8414"], RESOURCE))), upstream)
    idp = servers["rfc8414"]
    assert idp.count(RFC8414_PATH) == 1
    assert idp.count(OPENID_PATH) == 0, "RFC 8414 metadata found first"
    assert idp.count("/certs") == 1


def test_jwks_uri_discovered_from_openid_configuration(discovery, upstream):
    e, servers, issuers = discovery
    upstream.clear()
    assert_allowed(call(e, KEY.sign(claims(issuers["openid"], RESOURCE))), upstream)
    idp = servers["openid"]
    assert idp.count(RFC8414_PATH) == 1, "RFC 8414 is tried first"
    assert idp.count(OPENID_PATH) == 1
    assert idp.count("/certs") == 1


def test_discovery_document_naming_another_issuer_is_not_trusted(discovery, upstream):
    e, servers, issuers = discovery
    upstream.clear()
    assert_keys_unavailable(call(e, KEY.sign(claims(issuers["foreign"], RESOURCE))), upstream)
    idp = servers["foreign"]
    assert idp.count(RFC8414_PATH) >= 1 and idp.count(OPENID_PATH) >= 1
    assert idp.count("/certs") == 0, "never fetched keys from a document of another issuer"


def test_rotated_keys_are_refetched_on_unknown_kid_and_old_key_is_refused(envoy_version, upstream, idp):
    idp.set(jwks=jwks(KEY_A))
    with remote_envoy(envoy_version, upstream, idp) as e:
        token_a = KEY_A.sign(good_claims(sub="a"))
        upstream.clear()
        assert_allowed(call(e, token_a), upstream)
        assert idp.count() == 1

        idp.set(jwks=jwks(KEY_B))
        upstream.clear()
        assert_allowed(call(e, KEY_B.sign(good_claims(sub="b"))), upstream)
        assert idp.count() == 2, "an unknown kid refetches the key set once"

        # The very token accepted (and cached) before: its key is gone now.
        upstream.clear()
        assert_invalid_token(call(e, token_a), upstream, "unknown signing key", secret=token_a)
        # Unknown kids do not turn into a fetch per request.
        upstream.clear()
        assert_invalid_token(call(e, RsaKey("forged").sign(good_claims())), upstream, "unknown signing key")
        assert idp.count() == 2
        stats = counters(e)
        assert stats["jwks_fetch.ok"] == 2
        assert stats["jwks_fetch.unknown_key_refetch"] == 1


def test_keys_are_refreshed_on_schedule_and_max_age_zero_does_not_shorten_it_below_the_floor(
        envoy_version, upstream, idp):
    # max-age=0 is raised to the 30 s floor, so the 10 s refresh_seconds rules.
    idp.set(jwks=jwks(KEY_A), cache_control="max-age=0")
    with remote_envoy(envoy_version, upstream, idp, refresh_seconds=10) as e:
        token_a = KEY_A.sign(good_claims(sub="a"))
        upstream.clear()
        assert_allowed(call(e, token_a), upstream)
        idp.set(jwks=jwks(KEY_B))
        assert idp.wait_for(at_least=2, timeout=15), "refreshed after refresh_seconds"
        first, second = idp.request_times()[:2]
        assert 9.5 <= second - first <= 12.5, second - first
        # Once the refreshed set is loaded (the answer is on its way when the
        # server counts the request) the cached token's key is gone.
        assert poll(lambda: call(e, token_a)[0] == 401, timeout=2)
        upstream.clear()
        assert_invalid_token(call(e, token_a), upstream, "unknown signing key", secret=token_a)
        upstream.clear()
        assert_allowed(call(e, KEY_B.sign(good_claims(sub="b"))), upstream)
        assert counters(e)["jwks_fetch.ok"] >= 2


def test_jwks_down_at_start_gives_503_then_recovers_when_it_comes_up(envoy_version, upstream):
    server = JwksServer(jwks(KEY), start=False)
    timeout_ms = 1000
    try:
        with remote_envoy(envoy_version, upstream, server, timeout_ms=timeout_ms) as e:
            upstream.clear()
            token = KEY.sign(good_claims())
            started = time.time()
            result = call(e, token)
            waited = time.time() - started
            assert_keys_unavailable(result, upstream)
            assert waited <= timeout_ms / 1000, f"waited {waited:.2f}s; a refused connection fails at once"
            assert counters(e)["jwks_fetch.failed"] >= 1

            server.start()
            started = time.time()

            def accepted():
                upstream.clear()
                return call(e, token)[0] == 200
            assert poll(accepted, timeout=10), "keys are fetched once the JWKS comes up"
            assert time.time() - started < 5, time.time() - started
            assert counters(e)["jwks_fetch.ok"] == 1
    finally:
        server.stop()


def test_cached_keys_keep_working_when_jwks_goes_down(envoy_version, upstream, idp):
    with remote_envoy(envoy_version, upstream, idp, timeout_ms=500) as e:
        upstream.clear()
        assert_allowed(call(e, KEY.sign(good_claims(sub="first"))), upstream)
        idp.stop()
        # An unknown kid makes it try to refetch; that fails ...
        upstream.clear()
        assert_invalid_token(call(e, RsaKey("new").sign(good_claims())), upstream, "unknown signing key")
        assert poll(lambda: counters(e)["jwks_fetch.failed"] >= 1, timeout=3)
        # ... and the keys it had still verify new tokens.
        upstream.clear()
        assert_allowed(call(e, KEY.sign(good_claims(sub="second"))), upstream)


UNUSABLE = ["error", "garbage", "empty"]


@pytest.fixture(scope="module")
def unusable(envoy_version, upstream):
    """One Envoy, one issuer per way a JWKS can be unusable from the start."""
    servers = {mode: JwksServer(jwks(KEY)) for mode in UNUSABLE}
    for mode, server in servers.items():
        server.set(mode=mode)
    providers = [{"issuer": f"https://{mode}.example.com",
                  "jwks": {"remote": {"cluster": f"idp-{mode}", "url": f"{server.url}/certs",
                                      "timeout_ms": 1000}}}
                 for mode, server in servers.items()]
    clusters = [harness.cluster(f"idp-{mode}", server.port) for mode, server in servers.items()]
    try:
        with Envoy(envoy_version, config(providers), upstream.port, clusters=clusters) as e:
            yield e, servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("mode", UNUSABLE)
def test_unusable_jwks_at_start_gives_503(unusable, upstream, mode):
    e, servers = unusable
    before = counters(e)
    upstream.clear()
    started = time.time()
    result = call(e, KEY.sign(claims(f"https://{mode}.example.com", RESOURCE)))
    assert_keys_unavailable(result, upstream)
    assert time.time() - started <= 2.5 + 0.5
    after = counters(e)
    assert after["jwks_fetch.failed"] >= 1 and after["jwks_fetch.ok"] == 0, after
    assert after["denied.keys_unavailable"] - before["denied.keys_unavailable"] == 1
    assert servers[mode].count() >= 1


def test_hanging_jwks_gives_503_promptly_and_workers_share_the_failure(envoy_version, upstream, idp):
    idp.set(mode="hang")
    with remote_envoy(envoy_version, upstream, idp, timeout_ms=500, concurrency=4) as e:
        upstream.clear()
        started = time.time()
        result = call(e, KEY.sign(good_claims()))
        waited = time.time() - started
        assert_keys_unavailable(result, upstream)
        # The fetch under way times out after 500 ms; its failure ends the
        # wait on every worker (not each worker trying the issuer in turn).
        assert waited < 1.2, f"waited {waited:.2f}s for a 500 ms fetch timeout"
        assert idp.count() == 1, "one fetch at a time per Envoy, and a failure backs off all workers"
        assert counters(e)["jwks_fetch.failed"] == 1


def test_one_fetch_per_envoy_not_per_worker(envoy_version, upstream, idp):
    # A slow answer keeps the first fetch in flight while every worker's
    # timer ticks and requests on several workers wait for keys.
    idp.set(delay=0.6)
    with remote_envoy(envoy_version, upstream, idp, concurrency=4) as e:
        token = KEY.sign(good_claims())
        upstream.clear()
        # At most 4 at once: the RecordingUpstream's listen backlog is 5, and
        # requests released together all connect to it at the same moment.
        waiting = [None] * 4

        def one(i):
            waiting[i] = call(e, token)[0]
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(waiting))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert waiting == [200] * len(waiting)
        # More connections, which Envoy spreads over its workers.
        later = [call(e, KEY.sign(good_claims(sub=f"user-{i}")))[0] for i in range(8)]
        assert later == [200] * len(later)
        assert len(upstream.requests) == len(waiting) + len(later)
        assert idp.count("/certs") == 1, "the workers share one fetch"
        assert counters(e)["jwks_fetch.ok"] == 1
