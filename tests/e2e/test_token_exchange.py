"""README "A token for the upstream: token exchange", in a real Envoy with
the built filter, against an authorization server the test scripts
(`authorization_server.py`): after the verdict allows a call, the caller's
verified token is exchanged (RFC 8693) for one issued for the upstream's
audience, and the upstream gets that one — never the caller's. The result is
checked (its type, `token_type`, lifetime, and the `aud` of a JWT), reused
until shortly before it expires, and when the exchange is refused or the
server is down the request is answered 502 or 503 with nothing forwarded."""

import base64
import json
import time

import pytest

import harness
from authorization_server import (ACCESS_TOKEN_TYPE, EXCHANGE_GRANT, INTROSPECT_PATH, TOKEN_PATH, Reply,
                                  ScriptedAuthorizationServer, active, exchanged)
from configs import ISSUER, RESOURCE, SCOPES, base_config, inline_provider
from harness import Envoy, free_port
from mcp_client import LIST, call, post
from tokens import RsaKey, claims

KEY = RsaKey("k1")
AUDIENCE = "downstream-api"
SECRET = "exchange-secret-7Yq"
RULES = [
    {"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]},
    {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]},
]


def fake_jwt(payload):
    """A JWT-shaped token the scripted server issues (its signature is not
    the filter's to check: the token is for the upstream)."""
    part = lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'typ': 'at+jwt'})}.{part(payload)}.c2lnbmF0dXJl"


def upstream_jwt(aud=AUDIENCE, sub="alice"):
    now = int(time.time())
    return fake_jwt({"iss": ISSUER, "aud": aud, "sub": sub, "exp": now + 300, "iat": now})


def plugin(as_port, introspect=False, **upstream_token):
    provider = inline_provider(KEY)
    if introspect:
        provider["introspection"] = {"cluster": "as", "url": f"http://127.0.0.1:{as_port}{INTROSPECT_PATH}",
                                     "client_id": "mcp-gateway", "client_secret": SECRET}
    exchange = {"cluster": "as", "token_endpoint": f"http://127.0.0.1:{as_port}{TOKEN_PATH}",
                "client_id": "mcp-gateway", "client_secret": SECRET, "client_auth": "client_secret_post",
                "audience": AUDIENCE, "scope": "api:read", "timeout_ms": 500, **upstream_token}
    return base_config([provider], RULES, scopes_supported=SCOPES, upstream_token=exchange,
                       identity_headers={"x-mcp-subject": "sub"})


def envoy(version, upstream, as_port, cluster_port=None, **config):
    return Envoy(version, plugin(as_port, **config), upstream.port,
                 clusters=[harness.cluster("as", cluster_port or as_port)])


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
    upstream.clear()
    server.exchange = lambda c: Reply(200, exchanged(upstream_jwt()))


def caller(sub="alice"):
    """A fresh caller token (exchanges are cached per caller token)."""
    caller.n += 1
    return KEY.sign(claims(ISSUER, RESOURCE, sub=sub, jti=f"t{caller.n}"))


caller.n = 0


def assert_no_token_forwarded(result, upstream, status, code=-32007):
    got, headers, body = result
    assert got == status, (got, body)
    assert json.loads(body)["error"]["code"] == code
    assert upstream.requests == [], "nothing is forwarded without the token the operator asked for"
    return headers


def test_the_upstream_gets_the_exchanged_token_and_never_the_callers(e, server, upstream):
    issued = upstream_jwt()
    server.exchange = lambda c: Reply(200, exchanged(issued))
    token = caller()
    status, _, _ = post(e, LIST, token)
    assert status == 200
    [seen] = upstream.requests
    assert seen["headers"]["authorization"] == f"Bearer {issued}"
    assert token not in json.dumps(seen), "the caller's token never reaches the upstream"
    assert seen["headers"]["x-mcp-subject"] == "alice"
    [asked] = server.calls_to(TOKEN_PATH)
    assert asked["form"] == {
        "grant_type": EXCHANGE_GRANT, "subject_token": token, "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE, "audience": AUDIENCE, "scope": "api:read",
        "client_id": "mcp-gateway", "client_secret": SECRET}


def test_an_exchanged_token_is_reused_for_the_same_caller_token(e, server, upstream):
    token = caller()
    for _ in range(3):
        assert post(e, LIST, token)[0] == 200
    assert len(server.calls_to(TOKEN_PATH)) == 1
    other = caller()
    assert post(e, LIST, other)[0] == 200
    assert len(server.calls_to(TOKEN_PATH)) == 2, "another caller token gets its own exchange"


def test_a_refused_call_makes_no_exchange(e, server, upstream):
    status, _, _ = post(e, call("delete_everything"), caller())
    assert status == 403
    assert server.calls_to(TOKEN_PATH) == []


@pytest.mark.parametrize("reply", [
    Reply(400, {"error": "invalid_grant", "error_description": "subject token not allowed"}),
    Reply(403, {"error": "access_denied"}),
    Reply(200, exchanged(upstream_jwt(aud=RESOURCE))),
    Reply(200, exchanged(upstream_jwt(aud="some-other-api"))),
    Reply(200, exchanged("opaque", issued_token_type="urn:ietf:params:oauth:token-type:refresh_token")),
    Reply(200, exchanged("opaque", token_type="N_A")),
    Reply(200, exchanged("opaque", expires_in=0)),
    Reply(200, exchanged("two words")),
    Reply(200, b"not json", content_type="text/plain"),
    Reply(200, ('{"access_token": "%s", "access_token": "second", "issued_token_type": "%s", '
                '"token_type": "Bearer", "expires_in": 300}' % (upstream_jwt(), ACCESS_TOKEN_TYPE)).encode()),
    Reply(302, b"", headers={"location": "http://127.0.0.1:1/token"}),
], ids=["invalid-grant", "access-denied", "aud-is-the-mcp-server", "aud-of-another-api", "refresh-token",
        "token-type-na", "no-lifetime", "header-unsafe", "garbage", "duplicate-token",
        "redirect"])
def test_a_refused_or_unusable_exchange_is_502(e, server, upstream, reply):
    server.exchange = lambda c: reply
    before = e.counters()
    assert_no_token_forwarded(post(e, LIST, caller()), upstream, 502)
    after = e.counters()
    assert after["denied.upstream_token_unavailable"] - before["denied.upstream_token_unavailable"] == 1
    [line] = [d for d in e.decisions("deny") if d["reason"] == "upstream_token_unavailable"][-1:]
    assert AUDIENCE in line["detail"]


@pytest.mark.parametrize("reply", [
    Reply(503, {"error": "temporarily_unavailable"}),
    Reply(200, exchanged(upstream_jwt()), delay=1.5),
    Reply(reset=True),
], ids=["503", "slow", "reset"])
def test_an_unreachable_server_is_503_with_retry_after(e, server, upstream, reply):
    server.exchange = lambda c: reply
    headers = assert_no_token_forwarded(post(e, LIST, caller()), upstream, 503)
    assert headers["retry-after"] == ["5"]


def test_server_down_is_503(envoy_version, upstream):
    with envoy(envoy_version, upstream, free_port()) as down:
        upstream.clear()
        assert_no_token_forwarded(post(down, LIST, caller()), upstream, 503)


def test_the_log_names_the_exchange_never_a_token(e, server, upstream):
    issued = upstream_jwt(aud="some-other-api")
    server.exchange = lambda c: Reply(200, exchanged(issued))
    token = caller()
    post(e, LIST, token)
    logs = e.logs()
    assert token not in logs and issued not in logs and SECRET not in logs
    assert "exchange for downstream-api" in logs


def test_a_custom_header_carries_the_token_and_client_copies_are_removed(envoy_version, upstream, server):
    with envoy(envoy_version, upstream, server.port, header="X-Upstream-Token") as custom:
        upstream.clear()
        issued = upstream_jwt()
        server.exchange = lambda c: Reply(200, exchanged(issued))
        status, _, _ = post(custom, LIST, caller(), headers=[("X-Upstream-Token", "forged"),
                                                             ("x_upstream_token", "forged")])
        assert status == 200
        [seen] = upstream.requests
        values = [v for n, v in seen["header_list"] if n.replace("_", "-") == "x-upstream-token"]
        assert values == [issued]
        assert "authorization" not in seen["headers"]


def test_an_opaque_caller_token_is_introspected_then_exchanged(envoy_version, upstream, server):
    with envoy(envoy_version, upstream, server.port, introspect=True) as both:
        upstream.clear()
        opaque = "opaque-exchange-caller-Qw3"
        server.introspect[opaque] = Reply(200, active(ISSUER, RESOURCE))
        issued = upstream_jwt()
        server.exchange = lambda c: Reply(200, exchanged(issued))
        assert post(both, LIST, opaque)[0] == 200
        [seen] = upstream.requests
        assert seen["headers"]["authorization"] == f"Bearer {issued}"
        [asked] = server.calls_to(TOKEN_PATH)
        assert asked["form"]["subject_token"] == opaque
