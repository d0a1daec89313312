"""DPoP (README "Sender-constrained tokens (DPoP)") end to end: npm
`oidc-provider` issues access tokens bound to the client's key (`cnf.jkt`)
when the token request carries a DPoP proof; the client makes its proofs with
PyPI `jwcrypto` (`tests/dpop_client.py`); Envoy (both tested versions) runs
the filter in front of a recording upstream, the keys fetched from the
authorization server.

Two filters per Envoy version: `dpop: "allowed"` (bearer tokens too; two
workers, so that a proof replayed to the other worker is caught as well) and
`dpop: "required"` with server nonces. Every refusal is checked at the
upstream too: nothing of a refused request arrives, and no `DPoP` header
ever does."""

import base64
import hashlib
import hmac
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request

import pytest

from configs import TOOL_RULES
from dpop_client import DpopKey, ath, b64u, hs256, raw_jws
from harness import ENVOY_VERSIONS, free_port, read_response
from stack import AuthorizationServer, InteropEnvoy
from wire import h2_request

LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
NONCE_KEY = b64u(bytes(range(32)))
KINDS = ["allowed", "required"]


@pytest.fixture(scope="module")
def ports():
    return {(v, k): free_port() for v in ENVOY_VERSIONS for k in KINDS}


@pytest.fixture(scope="module")
def authorization_server(ports):
    resources = [f"http://127.0.0.1:{p}/mcp" for p in ports.values()]
    with AuthorizationServer(free_port(), resources) as server:
        yield server


def plugin(resource, issuer, kind):
    provider = {"issuer": issuer, "jwks": {"remote": {"cluster": "idp", "timeout_ms": 2000}},
                "algorithms": ["RS256"], "roles_claims": ["realm_access.roles"], "dpop": kind}
    if kind == "required":
        provider["dpop_nonce"] = {"keys": [NONCE_KEY], "lifetime_seconds": 60}
    return {"resource": resource, "scopes_supported": ["mcp:read", "mcp:write"],
            "providers": [provider], "rules": TOOL_RULES,
            "identity_headers": {"x-mcp-subject": "sub"}}


class Filter:
    """One Envoy with the filter, its resource, and the recording upstream."""

    def __init__(self, envoy, resource, upstream, auth):
        self.envoy, self.resource, self.upstream, self.auth = envoy, resource, upstream, auth

    def post(self, token=None, proofs=(), scheme="DPoP", method="POST", path="/mcp", extra=(), host=None):
        headers = [("content-type", "application/json")]
        if token is not None:
            headers.append(("authorization", f"{scheme} {token}"))
        headers += [("dpop", p) for p in proofs]
        headers += list(extra)
        body = LIST if method == "POST" else None
        if host is None:
            return self.envoy.request(method, path, body, headers)
        conn = http.client.HTTPConnection("127.0.0.1", self.envoy.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_host=True)
            for name, value in [("host", host), ("content-length", str(len(body or b"")))] + headers:
                conn.putheader(name, value)
            conn.endheaders(body)
            return read_response(conn)
        finally:
            conn.close()

    def token(self, key=None, client="svc-reader"):
        """A client-credentials token for the resource: bound to `key` when
        the token request carries a proof by it (RFC 9449 §5)."""
        url = self.auth.issuer + "/token"
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "resource": self.resource,
                                       "scope": "mcp:read"}).encode()
        basic = base64.b64encode(f"{client}:{client}-secret".encode()).decode()
        req = urllib.request.Request(url, data=form, method="POST", headers={
            "authorization": f"Basic {basic}", "content-type": "application/x-www-form-urlencoded"})
        if key is not None:
            req.add_header("DPoP", key.proof("POST", url))
        with urllib.request.urlopen(req, timeout=5) as r:
            answer = json.loads(r.read())
        assert answer["token_type"] == ("DPoP" if key else "Bearer"), answer
        return answer["access_token"]


@pytest.fixture(scope="module")
def filters(envoy_version, ports, authorization_server, upstream):
    started = {}
    try:
        for kind in KINDS:
            port = ports[(envoy_version, kind)]
            resource = f"http://127.0.0.1:{port}/mcp"
            envoy = InteropEnvoy(envoy_version, port, plugin(resource, authorization_server.issuer, kind),
                                 upstream.port, authorization_server.port)
            # Two workers: the replay memory must span them.
            envoy.concurrency = 2
            started[kind] = Filter(envoy.start(), resource, upstream, authorization_server)
        yield started
    finally:
        for f in started.values():
            f.envoy.stop()


@pytest.fixture
def allowed(filters, upstream):
    upstream.clear()
    return filters["allowed"]


@pytest.fixture
def required(filters, upstream):
    upstream.clear()
    return filters["required"]


def payload(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def challenges(headers):
    return headers.get("www-authenticate", [])


def assert_refused(f, reply, error, scheme="DPoP"):
    """401, the first challenge in `scheme` carrying `error`, and nothing
    reached the upstream."""
    status, headers, body = reply
    assert status == 401, (status, body)
    first = challenges(headers)[0]
    assert first.startswith(f'{scheme} error="{error}"'), challenges(headers)
    assert f.upstream.requests == [], f.upstream.requests
    return headers


def assert_forwarded_without_proof(f, reply):
    status, _, body = reply
    assert status == 200, (status, body)
    assert len(f.upstream.requests) == 1
    seen = f.upstream.requests[0]["headers"]
    assert "dpop" not in seen and "authorization" not in seen, seen


# --- tokens the authorization server binds --------------------------------

@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "RS256", "PS256"])
def test_a_valid_proof_passes_for_every_proof_algorithm(allowed, alg):
    key = DpopKey(alg)
    token = allowed.token(key)
    assert payload(token)["cnf"] == {"jkt": key.jkt}
    reply = allowed.post(token, [key.proof("POST", allowed.resource, token)])
    assert_forwarded_without_proof(allowed, reply)
    assert allowed.upstream.requests[0]["headers"]["x-mcp-subject"] == "svc-reader"


def test_a_cached_token_still_needs_a_fresh_proof_every_request(allowed):
    key = DpopKey()
    token = allowed.token(key)
    start = allowed.envoy.counters()
    # Three requests on two workers: one worker sees the token twice, so
    # at least one is a cache hit; each proof is still checked.
    for _ in range(3):
        assert allowed.post(token, [key.proof("POST", allowed.resource, token)])[0] == 200
    before = allowed.envoy.counters()
    assert before.get("token_cache.hit", 0) > start.get("token_cache.hit", 0)
    assert before["dpop.accepted"] == start.get("dpop.accepted", 0) + 3
    allowed.upstream.clear()
    for _ in range(2):
        assert_refused(allowed, allowed.post(token, []), "invalid_dpop_proof")
    after = allowed.envoy.counters()
    assert after.get("invalid_dpop_proof.missing", 0) == before.get("invalid_dpop_proof.missing", 0) + 2


def test_bearer_tokens_still_work_where_dpop_is_allowed(allowed):
    token = allowed.token()
    assert "cnf" not in payload(token)
    assert_forwarded_without_proof(allowed, allowed.post(token, scheme="Bearer"))


def test_a_bound_token_sent_as_bearer_is_refused(allowed):
    key = DpopKey()
    token = allowed.token(key)
    # Even with a valid proof alongside: the downgrade is refused.
    reply = allowed.post(token, [key.proof("POST", allowed.resource, token)], scheme="Bearer")
    headers = assert_refused(allowed, reply, "invalid_token", scheme="Bearer")
    assert any(c.startswith('DPoP algs="') for c in challenges(headers)), challenges(headers)


def test_the_dpop_scheme_is_read_in_any_case(allowed):
    key = DpopKey()
    token = allowed.token(key)
    reply = allowed.post(token, [key.proof("POST", allowed.resource, token)], scheme="dpop")
    assert_forwarded_without_proof(allowed, reply)


# --- every failure class ---------------------------------------------------

def failure_cases():
    """name -> (proof maker(key, other, resource, token), expected error)."""
    now = lambda: int(__import__("time").time())
    return {
        "wrong htm": (lambda k, o, r, t: [k.proof("GET", r, t)], "invalid_dpop_proof"),
        "htu another host": (lambda k, o, r, t: [k.proof("POST", r.replace("127.0.0.1", "localhost"), t)],
                             "invalid_dpop_proof"),
        "htu another path": (lambda k, o, r, t: [k.proof("POST", r + "/other", t)], "invalid_dpop_proof"),
        "htu trailing slash": (lambda k, o, r, t: [k.proof("POST", r + "/", t)], "invalid_dpop_proof"),
        "htu another port": (lambda k, o, r, t: [k.proof("POST", r.replace("127.0.0.1:", "127.0.0.1:1"), t)],
                             "invalid_dpop_proof"),
        "old iat": (lambda k, o, r, t: [k.proof("POST", r, t, iat=now() - 400)], "invalid_dpop_proof"),
        "future iat": (lambda k, o, r, t: [k.proof("POST", r, t, iat=now() + 400)], "invalid_dpop_proof"),
        "iat as a string": (lambda k, o, r, t: [k.proof("POST", r, t, claims={"iat": str(now())})],
                            "invalid_dpop_proof"),
        "wrong ath": (lambda k, o, r, t: [k.proof("POST", r, t + "x")], "invalid_dpop_proof"),
        "no ath": (lambda k, o, r, t: [k.proof("POST", r)], "invalid_dpop_proof"),
        "thumbprint mismatch": (lambda k, o, r, t: [o.proof("POST", r, t)], "invalid_token"),
        "signed by another key": (lambda k, o, r, t: [o.sign(k.header(), k.claims("POST", r, t))],
                                  "invalid_dpop_proof"),
        "HMAC alg": (lambda k, o, r, t: [hs256({"typ": "dpop+jwt", "alg": "HS256", "jwk": k.public_jwk},
                                               k.claims("POST", r, t), b"secret")], "invalid_dpop_proof"),
        "none alg": (lambda k, o, r, t: [raw_jws(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": k.public_jwk}),
                                                 json.dumps(k.claims("POST", r, t)))], "invalid_dpop_proof"),
        "private key in the header": (lambda k, o, r, t: [k.proof("POST", r, t, header={
            "jwk": k.key.export_private(as_dict=True)})], "invalid_dpop_proof"),
        "kid beside the jwk": (lambda k, o, r, t: [k.proof("POST", r, t, header={"kid": "rs256-x"})],
                               "invalid_dpop_proof"),
        "typ JWT": (lambda k, o, r, t: [k.proof("POST", r, t, header={"typ": "JWT"})], "invalid_dpop_proof"),
        "two DPoP headers": (lambda k, o, r, t: [k.proof("POST", r, t), k.proof("POST", r, t)],
                             "invalid_dpop_proof"),
        "two proofs joined by a comma": (lambda k, o, r, t: [k.proof("POST", r, t) + ", " + k.proof("POST", r, t)],
                                         "invalid_dpop_proof"),
        "duplicate header keys": (lambda k, o, r, t: [k.sign_text(
            json.dumps(k.header())[:-1] + ', "typ": "JWT"}', json.dumps(k.claims("POST", r, t)))],
            "invalid_dpop_proof"),
        "no proof": (lambda k, o, r, t: [], "invalid_dpop_proof"),
    }


@pytest.mark.parametrize("case", list(failure_cases()))
def test_each_failure_class_is_refused_with_its_challenge(allowed, case):
    make, error = failure_cases()[case]
    key, other = DpopKey(), DpopKey()
    token = allowed.token(key)
    headers = assert_refused(allowed, allowed.post(token, make(key, other, allowed.resource, token)), error)
    # Bearer is still taken there: its challenge comes along.
    assert any(c.startswith("Bearer resource_metadata=") for c in challenges(headers)), challenges(headers)
    assert 'algs="' in challenges(headers)[0]


def test_a_proof_for_another_token_is_refused(allowed):
    key = DpopKey()
    first, second = allowed.token(key), allowed.token(key)
    assert_refused(allowed, allowed.post(second, [key.proof("POST", allowed.resource, first)]),
                   "invalid_dpop_proof")


def test_equivalent_htu_spellings_pass(allowed):
    key = DpopKey()
    token = allowed.token(key)
    for htu in [allowed.resource.replace("http://", "HTTP://"), allowed.resource + "?q=1",
                allowed.resource.replace("/mcp", "/./mcp")]:
        allowed.upstream.clear()
        assert allowed.post(token, [key.proof("POST", htu, token)])[0] == 200, htu


def test_the_proof_is_checked_against_the_resource_never_the_host_header(allowed):
    key = DpopKey()
    token = allowed.token(key)
    spoofed = "http://evil.example/mcp"
    reply = allowed.post(token, [key.proof("POST", spoofed, token)], host="evil.example")
    assert_refused(allowed, reply, "invalid_dpop_proof")
    allowed.upstream.clear()
    reply = allowed.post(token, [key.proof("POST", allowed.resource, token)], host="evil.example")
    assert reply[0] == 200


# --- replay ------------------------------------------------------------------

def test_a_replayed_proof_is_refused_on_either_worker(allowed):
    key = DpopKey()
    token = allowed.token(key)
    proof = key.proof("POST", allowed.resource, token)
    # The same proof on many connections at once: Envoy spreads them over
    # its two workers; exactly one gets through.
    statuses = []
    lock = threading.Lock()

    def send():
        status = allowed.post(token, [proof])[0]
        with lock:
            statuses.append(status)
    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [401] * 11, statuses
    assert len(allowed.upstream.requests) == 1
    counters = allowed.envoy.counters()
    assert counters["invalid_dpop_proof.replay"] >= 11


# --- required, with server nonces -------------------------------------------

def test_required_takes_only_dpop_and_says_so(required):
    status, headers, _ = required.post()
    assert status == 401
    assert challenges(headers) == [
        f'DPoP algs="RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA", resource_metadata='
        f'"{required.resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")}", '
        f'scope="mcp:read mcp:write"']
    assert_refused(required, required.post(required.token(), scheme="Bearer"), "invalid_token")
    status, _, body = required.envoy.request("GET", "/.well-known/oauth-protected-resource/mcp")
    doc = json.loads(body)
    assert doc["dpop_bound_access_tokens_required"] is True
    assert "ES256" in doc["dpop_signing_alg_values_supported"]


def test_metadata_says_dpop_is_optional_where_allowed(allowed):
    doc = json.loads(allowed.envoy.request("GET", "/.well-known/oauth-protected-resource/mcp")[2])
    assert doc["dpop_bound_access_tokens_required"] is False
    assert doc["dpop_signing_alg_values_supported"][0] == "RS256"


def test_nonce_flow(required):
    key = DpopKey()
    token = required.token(key)
    headers = assert_refused(required, required.post(token, [key.proof("POST", required.resource, token)]),
                             "use_dpop_nonce")
    nonce = headers["dpop-nonce"][0]
    # A made-up nonce is no better.
    assert_refused(required, required.post(token, [key.proof("POST", required.resource, token, nonce="bm9uY2U")]),
                   "use_dpop_nonce")
    reply = required.post(token, [key.proof("POST", required.resource, token, nonce=nonce)])
    assert_forwarded_without_proof(required, reply)


def filter_nonce(issued_at):
    """A nonce as the filter makes them (README: the issue time, MACed with
    HMAC-SHA256 under a configured key), made here from the configured key."""
    when = issued_at.to_bytes(8, "big")
    key = base64.urlsafe_b64decode(NONCE_KEY + "=" * (-len(NONCE_KEY) % 4))
    tag = hmac.new(key, b"mcp-authz DPoP nonce v1\0" + when, hashlib.sha256).digest()[:16]
    return b64u(when + tag)


def test_a_nonce_past_half_its_life_is_renewed_with_the_answer(required):
    key = DpopKey()
    token = required.token(key)
    now = int(time.time())
    fresh = required.post(token, [key.proof("POST", required.resource, token, nonce=filter_nonce(now))])
    assert fresh[0] == 200 and "dpop-nonce" not in fresh[1]
    required.upstream.clear()
    aging = required.post(token, [key.proof("POST", required.resource, token, nonce=filter_nonce(now - 40))])
    assert aging[0] == 200
    renewed = aging[1]["dpop-nonce"][0]
    required.upstream.clear()
    assert required.post(token, [key.proof("POST", required.resource, token, nonce=renewed)])[0] == 200
    # Expired, or from the future beyond the proxies' leeway: a new one.
    for when in (now - 120, now + 60):
        required.upstream.clear()
        assert_refused(required, required.post(
            token, [key.proof("POST", required.resource, token, nonce=filter_nonce(when))]), "use_dpop_nonce")


def test_a_proof_in_trailers_is_no_proof(allowed):
    """Proofs are read from the request headers only: one sent in HTTP/2
    trailers counts for nothing, and nothing of the request goes upstream."""
    key = DpopKey()
    token = allowed.token(key)
    reply = h2_request(allowed.envoy.port, "POST", "/mcp", headers=[
        ("content-type", "application/json"), ("authorization", f"DPoP {token}")],
        body=LIST, trailers=[("dpop", key.proof("POST", allowed.resource, token))])
    assert reply.status == 401
    assert reply.headers["www-authenticate"][0].startswith('DPoP error="invalid_dpop_proof"')
    assert allowed.upstream.requests == []
