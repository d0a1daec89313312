"""README "Configuration reference" `providers[].jwks.remote` and "Failure
behaviour" (remote keys), in a real Envoy with the built filter: keys
fetched through an Envoy cluster from a JWKS URL or one found by discovery
(RFC 8414, then OpenID), refreshed on schedule and refetched once for an
unknown `kid`; 503 with `Retry-After` while keys were never fetched (issuer
down, failing, hanging), the last good keys kept through an outage; one
fetch per Envoy, not per worker; and the `jwks_fetch.*` counters that show
it."""

import threading
import time

import pytest

import harness
from configs import ISSUER, RESOURCE, SCOPES, base_config
from harness import Envoy, poll
from jwks_server import JwksServer
from mcp_client import LIST, assert_allowed, assert_invalid_token, assert_keys_unavailable, post
from tokens import RsaKey, claims, jwks

KEY = RsaKey("k1")
ROGUE_KEY = RsaKey("k1")  # same kid as KEY, different key
KEY_A = RsaKey("rot-a")
KEY_B = RsaKey("rot-b")


def config(providers):
    return base_config(providers, [{"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]}],
                       scopes_supported=SCOPES)


def remote_config(server, **remote):
    r = {"cluster": "idp", "url": f"{server.url}/certs", **remote}
    return config([{"issuer": ISSUER, "jwks": {"remote": r}}])


def remote_envoy(version, upstream, server, concurrency=1, **kwargs):
    return Envoy(version, remote_config(server, **kwargs), upstream.port,
                 clusters=[harness.cluster("idp", server.port)], concurrency=concurrency)


def good_claims(**extra):
    return claims(ISSUER, RESOURCE, **extra)


@pytest.fixture
def idp():
    server = JwksServer(jwks(KEY))
    yield server
    server.stop()


# --- a JWKS URL, and discovery -----------------------------------------------


def test_token_verified_with_keys_fetched_from_remote_jwks(envoy_version, upstream, idp):
    with remote_envoy(envoy_version, upstream, idp) as e:
        upstream.clear()
        assert_allowed(post(e, LIST, KEY.sign(good_claims())), upstream)
        upstream.clear()
        forged = ROGUE_KEY.sign(good_claims())
        assert_invalid_token(post(e, LIST, forged), upstream, "signature invalid", secret=forged)
        stats = e.counters()
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
    assert_allowed(post(e, LIST, KEY.sign(claims(issuers["rfc8414"], RESOURCE))), upstream)
    idp = servers["rfc8414"]
    assert idp.count(RFC8414_PATH) == 1
    assert idp.count(OPENID_PATH) == 0, "RFC 8414 metadata found first"
    assert idp.count("/certs") == 1


def test_jwks_uri_discovered_from_openid_configuration(discovery, upstream):
    e, servers, issuers = discovery
    upstream.clear()
    assert_allowed(post(e, LIST, KEY.sign(claims(issuers["openid"], RESOURCE))), upstream)
    idp = servers["openid"]
    assert idp.count(RFC8414_PATH) == 1, "RFC 8414 is tried first"
    assert idp.count(OPENID_PATH) == 1
    assert idp.count("/certs") == 1


def test_discovery_document_naming_another_issuer_is_not_trusted(discovery, upstream):
    e, servers, issuers = discovery
    upstream.clear()
    assert_keys_unavailable(post(e, LIST, KEY.sign(claims(issuers["foreign"], RESOURCE))), upstream)
    idp = servers["foreign"]
    assert idp.count(RFC8414_PATH) >= 1 and idp.count(OPENID_PATH) >= 1
    assert idp.count("/certs") == 0, "never fetched keys from a document of another issuer"


# --- rotation and refresh ----------------------------------------------------


def test_rotated_keys_are_refetched_on_unknown_kid_and_old_key_is_refused(envoy_version, upstream, idp):
    idp.set(jwks=jwks(KEY_A))
    with remote_envoy(envoy_version, upstream, idp) as e:
        token_a = KEY_A.sign(good_claims(sub="a"))
        upstream.clear()
        assert_allowed(post(e, LIST, token_a), upstream)
        assert idp.count() == 1

        idp.set(jwks=jwks(KEY_B))
        upstream.clear()
        assert_allowed(post(e, LIST, KEY_B.sign(good_claims(sub="b"))), upstream)
        assert idp.count() == 2, "an unknown kid refetches the key set once"

        # The very token accepted (and cached) before: its key is gone now.
        upstream.clear()
        assert_invalid_token(post(e, LIST, token_a), upstream, "unknown signing key", secret=token_a)
        # Unknown kids do not turn into a fetch per request.
        upstream.clear()
        assert_invalid_token(post(e, LIST, RsaKey("forged").sign(good_claims())), upstream, "unknown signing key")
        assert idp.count() == 2
        stats = e.counters()
        assert stats["jwks_fetch.ok"] == 2
        assert stats["jwks_fetch.unknown_key_refetch"] == 1


def test_keys_are_refreshed_on_schedule_and_max_age_zero_does_not_shorten_it_below_the_floor(
        envoy_version, upstream, idp):
    # max-age=0 is raised to the 30 s floor, so the 10 s refresh_seconds rules.
    idp.set(jwks=jwks(KEY_A), cache_control="max-age=0")
    with remote_envoy(envoy_version, upstream, idp, refresh_seconds=10) as e:
        token_a = KEY_A.sign(good_claims(sub="a"))
        upstream.clear()
        assert_allowed(post(e, LIST, token_a), upstream)
        idp.set(jwks=jwks(KEY_B))
        assert idp.wait_for(at_least=2, timeout=15), "refreshed after refresh_seconds"
        first, second = idp.request_times()[:2]
        assert 9.5 <= second - first <= 12.5, second - first
        # Once the refreshed set is loaded (the answer is on its way when the
        # server counts the request) the cached token's key is gone.
        assert poll(lambda: post(e, LIST, token_a)[0] == 401, timeout=2, interval=0.1)
        upstream.clear()
        assert_invalid_token(post(e, LIST, token_a), upstream, "unknown signing key", secret=token_a)
        upstream.clear()
        assert_allowed(post(e, LIST, KEY_B.sign(good_claims(sub="b"))), upstream)
        assert e.counters()["jwks_fetch.ok"] >= 2


# --- failures ----------------------------------------------------------------


def test_jwks_down_at_start_gives_503_then_recovers_when_it_comes_up(envoy_version, upstream):
    server = JwksServer(jwks(KEY), start=False)
    timeout_ms = 1000
    try:
        with remote_envoy(envoy_version, upstream, server, timeout_ms=timeout_ms) as e:
            upstream.clear()
            token = KEY.sign(good_claims())
            started = time.time()
            result = post(e, LIST, token)
            waited = time.time() - started
            assert_keys_unavailable(result, upstream)
            assert waited <= timeout_ms / 1000, f"waited {waited:.2f}s; a refused connection fails at once"
            assert e.counters()["jwks_fetch.failed"] >= 1

            server.start()
            started = time.time()

            def accepted():
                upstream.clear()
                return post(e, LIST, token)[0] == 200
            assert poll(accepted, timeout=10, interval=0.1), "keys are fetched once the JWKS comes up"
            assert time.time() - started < 5, time.time() - started
            assert e.counters()["jwks_fetch.ok"] == 1
    finally:
        server.stop()


def test_cached_keys_keep_working_when_jwks_goes_down(envoy_version, upstream, idp):
    with remote_envoy(envoy_version, upstream, idp, timeout_ms=500) as e:
        upstream.clear()
        assert_allowed(post(e, LIST, KEY.sign(good_claims(sub="first"))), upstream)
        idp.stop()
        # An unknown kid makes it try to refetch; that fails ...
        upstream.clear()
        assert_invalid_token(post(e, LIST, RsaKey("new").sign(good_claims())), upstream, "unknown signing key")
        assert poll(lambda: e.counters()["jwks_fetch.failed"] >= 1, timeout=3, interval=0.1)
        # ... and the keys it had still verify new tokens.
        upstream.clear()
        assert_allowed(post(e, LIST, KEY.sign(good_claims(sub="second"))), upstream)


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
    before = e.counters()
    upstream.clear()
    started = time.time()
    result = post(e, LIST, KEY.sign(claims(f"https://{mode}.example.com", RESOURCE)))
    assert_keys_unavailable(result, upstream)
    assert time.time() - started <= 2.5 + 0.5
    after = e.counters()
    assert after["jwks_fetch.failed"] >= 1 and after["jwks_fetch.ok"] == 0, after
    assert after["denied.keys_unavailable"] - before["denied.keys_unavailable"] == 1
    assert servers[mode].count() >= 1


def test_hanging_jwks_gives_503_promptly_and_workers_share_the_failure(envoy_version, upstream, idp):
    idp.set(mode="hang")
    with remote_envoy(envoy_version, upstream, idp, timeout_ms=500, concurrency=4) as e:
        upstream.clear()
        started = time.time()
        result = post(e, LIST, KEY.sign(good_claims()))
        waited = time.time() - started
        assert_keys_unavailable(result, upstream)
        # The fetch under way times out after 500 ms; its failure ends the
        # wait on every worker (not each worker trying the issuer in turn).
        assert waited < 1.2, f"waited {waited:.2f}s for a 500 ms fetch timeout"
        assert idp.count() == 1, "one fetch at a time per Envoy, and a failure backs off all workers"
        assert e.counters()["jwks_fetch.failed"] == 1


# --- one fetch per Envoy -----------------------------------------------------


def test_one_fetch_per_envoy_not_per_worker(envoy_version, upstream, idp):
    # A slow answer keeps the first fetch in flight while every worker's
    # timer ticks and requests on several workers wait for keys.
    idp.set(delay=0.6)
    with remote_envoy(envoy_version, upstream, idp, concurrency=4) as e:
        token = KEY.sign(good_claims())
        upstream.clear()
        # Four at once, released together when the keys arrive.
        waiting = [None] * 4

        def one(i):
            waiting[i] = post(e, LIST, token)[0]
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(waiting))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert waiting == [200] * len(waiting)
        # More connections, which Envoy spreads over its workers.
        later = [post(e, LIST, KEY.sign(good_claims(sub=f"user-{i}")))[0] for i in range(8)]
        assert later == [200] * len(later)
        assert len(upstream.requests) == len(waiting) + len(later)
        assert idp.count("/certs") == 1, "the workers share one fetch"
        assert e.counters()["jwks_fetch.ok"] == 1
