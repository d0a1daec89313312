"""README "A token for the upstream: token exchange", in a real Envoy with
the built filter, against an authorization server the test scripts
(`authorization_server.py`): after the verdict allows a call, the caller's
verified token is exchanged (RFC 8693) for one issued for the upstream's
audience, and the upstream gets that one — never the caller's. The result is
checked (its type, `token_type`, lifetime, and the `aud` of a JWT), reused
until 30 s before it expires (or never, with `cache: false`), and when the
exchange is refused or the server is down the request is answered 502 or 503
with nothing forwarded — in `audit` mode too, where only a request with no
verified identity (nothing to exchange) goes on without a token."""

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


def plugin(as_port, introspect=False, mode="enforce", **upstream_token):
    provider = inline_provider(KEY)
    if introspect:
        provider["introspection"] = {"cluster": "as", "url": f"http://127.0.0.1:{as_port}{INTROSPECT_PATH}",
                                     "client_id": "mcp-gateway", "client_secret": SECRET, "timeout_ms": 500}
    exchange = {"cluster": "as", "token_endpoint": f"http://127.0.0.1:{as_port}{TOKEN_PATH}",
                "client_id": "mcp-gateway", "client_secret": SECRET, "client_auth": "client_secret_post",
                "audience": AUDIENCE, "scope": "api:read", "timeout_ms": 500, **upstream_token}
    return base_config([provider], RULES, scopes_supported=SCOPES, upstream_token=exchange,
                       identity_headers={"x-mcp-subject": "sub"}, mode=mode)


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


def issuing(expires_in):
    """A token endpoint that issues a new opaque token on every call, good
    for `expires_in` seconds."""
    issued = []

    def reply(call):
        issued.append(f"upstream-opaque-{len(issued) + 1}")
        return Reply(200, exchanged(issued[-1], expires_in=expires_in))
    return reply, issued


def upstream_tokens(upstream):
    return [seen["headers"]["authorization"] for seen in upstream.requests]


def test_with_cache_false_every_call_is_exchanged(envoy_version, upstream, server):
    with envoy(envoy_version, upstream, server.port, cache=False) as uncached:
        upstream.clear()
        server.exchange, issued = issuing(300)
        token = caller()
        for _ in range(3):
            assert post(uncached, LIST, token)[0] == 200
        assert len(server.calls_to(TOKEN_PATH)) == 3, "one exchange per call"
        assert upstream_tokens(upstream) == [f"Bearer {t}" for t in issued], "each call goes with its own token"


def test_a_token_near_its_expiry_is_exchanged_again(e, server, upstream):
    # Good for 35 s: reused for the first 5 s only (until 30 s before it
    # expires).
    server.exchange, issued = issuing(35)
    token = caller()
    started = time.monotonic()
    assert post(e, LIST, token)[0] == 200
    assert post(e, LIST, token)[0] == 200
    assert time.monotonic() - started < 4.5, "the machine was too slow to see the reuse"
    assert len(server.calls_to(TOKEN_PATH)) == 1, "reused while more than 30 s are left"
    time.sleep(max(0.0, started + 5.5 - time.monotonic()))
    assert post(e, LIST, token)[0] == 200
    assert len(server.calls_to(TOKEN_PATH)) == 2, "exchanged again 30 s before it expires"
    assert upstream_tokens(upstream) == [f"Bearer {issued[0]}", f"Bearer {issued[0]}", f"Bearer {issued[1]}"]
    # A token with 30 s or less to live is never reused.
    server.clear()
    server.exchange, issued = issuing(30)
    other = caller()
    assert post(e, LIST, other)[0] == 200
    assert post(e, LIST, other)[0] == 200
    assert len(server.calls_to(TOKEN_PATH)) == 2


# Audit mode: the rules' refusals go on, but never without the token the
# operator asked for when there is a verified caller to exchange it for.

@pytest.fixture(scope="module")
def audit(envoy_version, upstream, server):
    with envoy(envoy_version, upstream, server.port, introspect=True, mode="audit") as running:
        yield running


def test_audit_mode_refuses_a_failed_exchange_and_forwards_nothing(audit, server, upstream):
    server.exchange = lambda c: Reply(400, {"error": "invalid_grant"})
    assert_no_token_forwarded(post(audit, LIST, caller()), upstream, 502)
    # A call the rules would refuse, which audit mode lets on: the same.
    assert_no_token_forwarded(post(audit, call("delete_everything"), caller()), upstream, 502)
    server.exchange = lambda c: Reply(503, {"error": "temporarily_unavailable"})
    headers = assert_no_token_forwarded(post(audit, LIST, caller()), upstream, 503)
    assert headers["retry-after"] == ["5"]


def test_audit_mode_exchanges_for_a_call_the_rules_would_refuse(audit, server, upstream):
    issued = upstream_jwt()
    server.exchange = lambda c: Reply(200, exchanged(issued))
    before = audit.counters()
    assert post(audit, call("delete_everything"), caller())[0] == 200
    [seen] = upstream.requests
    assert seen["headers"]["authorization"] == f"Bearer {issued}"
    assert audit.counters()["audit_would_deny"] - before["audit_would_deny"] == 1


@pytest.mark.parametrize("introspected", [
    Reply(200, {"active": False}),
    Reply(503, {"error": "temporarily_unavailable"}),
    Reply(reset=True),
], ids=["inactive", "503", "reset"])
def test_audit_mode_lets_a_token_introspection_cannot_vouch_for_on_without_any_token(
        audit, server, upstream, introspected):
    opaque = f"opaque-audit-{introspected.status}-{introspected.reset}"
    server.introspect[opaque] = introspected
    server.exchange = lambda c: Reply(200, exchanged(upstream_jwt()))
    status, _, body = post(audit, LIST, opaque)
    assert status == 200, body
    [seen] = upstream.requests
    assert "authorization" not in seen["headers"], "no identity: nothing exchanged, and never the caller's token"
    assert "x-mcp-subject" not in seen["headers"]
    assert opaque not in json.dumps(seen)
    assert server.calls_to(TOKEN_PATH) == []
