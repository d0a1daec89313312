"""README "Request handling" step 4 (the token) and "Configuration
reference" `providers[]` (`issuer`, `audiences`, `algorithms`,
`clock_skew_seconds`, `token_types`, `require_token_type`), in a real Envoy
with the built filter and inline keys: which tokens are accepted, and the
401 `invalid_token` answer (with its `error_description`) for every other.
The token types (issue 12's case 10) over each client transport
(`wire.TRANSPORTS`). Remote keys are in `test_remote_keys.py`, what the
upstream gets of the token in `test_identity.py`."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from configs import ISSUER, RESOURCE, SCOPES, base_config
from harness import Envoy
from mcp_client import LIST, assert_allowed, assert_invalid_token, post
from tokens import EcKey, RsaKey, claims, jwks
from wire import TRANSPORTS

OTHER_ISSUER = "https://other.example.com/realms/other"
KEY = RsaKey("k1")
EC_KEY = EcKey("e1")
OTHER_KEY = RsaKey("other-1")
ROGUE_KEY = RsaKey("k1")  # same kid as KEY, different key


def config(**overrides):
    return base_config([
        {"issuer": ISSUER, "jwks": {"inline": jwks(KEY, EC_KEY)}, "clock_skew_seconds": 60},
        {"issuer": OTHER_ISSUER, "jwks": {"inline": jwks(OTHER_KEY)}},
    ], [{"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]}],
        scopes_supported=SCOPES) | overrides


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


# --- accepted and refused tokens ---------------------------------------------


@pytest.fixture(scope="module")
def envoy(envoy_version, upstream):
    with Envoy(envoy_version, config(), upstream.port, trailers_listener=True) as e:
        yield e


def test_valid_rs256_token_is_accepted_and_reaches_upstream(envoy, upstream):
    upstream.clear()
    assert_allowed(post(envoy, LIST, KEY.sign(good_claims())), upstream)


def test_valid_es256_token_is_accepted(envoy, upstream):
    upstream.clear()
    assert_allowed(post(envoy, LIST, EC_KEY.sign(good_claims())), upstream)


def test_audience_list_containing_the_resource_is_accepted(envoy, upstream):
    upstream.clear()
    token = KEY.sign(good_claims(aud=["account", RESOURCE, "https://other.example.com"]))
    assert_allowed(post(envoy, LIST, token), upstream)


def test_token_expired_within_clock_skew_is_accepted(envoy, upstream):
    upstream.clear()
    now = int(time.time())
    token = KEY.sign(good_claims(iat=now - 600, exp=now - 30))
    assert_allowed(post(envoy, LIST, token), upstream)


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
    assert_invalid_token(post(envoy, LIST, token), upstream, description, secret=token)


def test_two_authorization_headers_are_refused(envoy, upstream):
    upstream.clear()
    token = KEY.sign(good_claims())
    result = post(envoy, LIST, headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")])
    assert_invalid_token(result, upstream, "token malformed", secret=token)


def test_basic_scheme_is_refused(envoy, upstream):
    upstream.clear()
    secret = base64.b64encode(b"alice:correct horse battery staple").decode()
    result = post(envoy, LIST, headers=[("Authorization", f"Basic {secret}")])
    assert_invalid_token(result, upstream, "token malformed", secret=secret)


# --- token types -----------------------------------------------------------------

# PyJWT writes `typ: JWT` unless told to leave it out.
NO_TYP = {"typ": None}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("typ", ["logout+jwt", "dpop+jwt", "secevent+jwt", "application/secevent+jwt"])
def test_other_kinds_of_jwt_are_no_access_tokens(envoy, upstream, typ, transport):
    upstream.clear()
    token = KEY.sign(good_claims(), headers={"typ": typ})
    before = envoy.counters()
    assert_invalid_token(post(envoy, LIST, token, transport=transport), upstream, "token type not accepted",
                         secret=token)
    after = envoy.counters()
    assert after["invalid_token.token_type"] - before.get("invalid_token.token_type", 0) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "JWT", None], ids=str)
def test_access_token_types_are_accepted(envoy, upstream, typ, transport):
    """`at+jwt` (RFC 9068), and for issuers that do not set it `JWT` or no
    `typ` at all, by default."""
    upstream.clear()
    token = KEY.sign(good_claims(), headers={"typ": typ})
    if typ is None:
        assert "typ" not in jwt.get_unverified_header(token)
    assert_allowed(post(envoy, LIST, token, transport=transport), upstream)


@pytest.fixture(scope="module")
def strict_envoy(envoy_version, upstream):
    """The first issuer follows RFC 9068: `token_types: ["at+jwt"]` and
    `require_token_type`; the other keeps the defaults."""
    strict = config()
    strict["providers"][0] |= {"token_types": ["at+jwt"], "require_token_type": True}
    with Envoy(envoy_version, strict, upstream.port, trailers_listener=True) as e:
        yield e


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("typ", [None, "JWT", "jwt"], ids=str)
def test_a_provider_that_requires_at_jwt_refuses_untyped_and_plain_jwts(strict_envoy, upstream, typ, transport):
    upstream.clear()
    token = KEY.sign(good_claims(), headers={"typ": typ})
    if typ is None:
        assert "typ" not in jwt.get_unverified_header(token)
    assert_invalid_token(post(strict_envoy, LIST, token, transport=transport), upstream,
                         "token type not accepted", secret=token)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_required_token_types_are_per_provider(strict_envoy, upstream, transport):
    """The strict issuer takes `at+jwt` in either spelling; the other issuer
    still takes a token without `typ`."""
    for token in [KEY.sign(good_claims(), headers={"typ": "at+jwt"}),
                  KEY.sign(good_claims(), headers={"typ": "application/at+jwt"}),
                  OTHER_KEY.sign(claims(OTHER_ISSUER, RESOURCE), headers=NO_TYP)]:
        upstream.clear()
        assert_allowed(post(strict_envoy, LIST, token, transport=transport), upstream)


def test_an_unusable_inline_key_is_logged_and_the_others_verify(envoy_version, upstream):
    """README "Configuration reference" (`jwks.inline`): a key the filter
    cannot use is skipped with a warning naming it, never its material."""
    weak = {"kty": "RSA", "kid": "weak-1", "n": "AQAB", "e": "AQAB"}
    keys = jwks(KEY)
    keys["keys"].append(weak)
    with Envoy(envoy_version, config() | {"providers": [{"issuer": ISSUER, "jwks": {"inline": keys}}]},
               upstream.port) as e:
        upstream.clear()
        assert_allowed(post(e, LIST, KEY.sign(good_claims())), upstream)
        warnings = [line for line in e.logs().splitlines() if "skipped an inline key" in line]
        # Once per VM configured (the configuration canary, the main thread,
        # each worker), like the "configured" line.
        assert warnings, e.logs()[-2000:]
        for line in warnings:
            assert ISSUER in line and "#1" in line and "weak-1" in line and "AQAB" not in line
