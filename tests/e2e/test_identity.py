"""README "Configuration reference" `identity_headers` and
`token_forwarding`, and "Request handling" steps 2 and 6: what the upstream
learns of the caller. The configured headers carry the verified token's
claims; a client's own copies, in every spelling (any case, `_` for `-`),
never reach the upstream, on public paths neither; a list element that
could be read as two is left out; the token itself is stripped unless
forwarding is configured. Real Envoy with the built filter, both versions,
in front of an upstream that records every request; issue 12's case 9 over
each client transport (`wire.TRANSPORTS`; HTTP/2 carries header names in
lower case only, so there the spellings differ by `_` and `-` alone)."""

import pytest

from configs import ISSUER, RESOURCE, base_config
from harness import Envoy
from mcp_client import LIST, assert_allowed, post
from tokens import RsaKey, claims, jwks
from wire import TRANSPORTS, send

KEY = RsaKey("identity")

IDENTITY_HEADERS = {"x-mcp-subject": "sub", "x-mcp-roles": "$roles",
                    "x-mcp-scopes": "$scopes", "x-mcp-client-id": "client_id"}
KEYCLOAK_ROLES = ["realm_access.roles", "resource_access.mcp-server.roles"]

# A client's own identity headers, in the spellings an HTTP stack may read
# as the configured ones.
SPOOFS = [("X-MCP-Subject", "admin"), ("x-mcp-roles", "superuser"), ("x-mcp-client-id", "forged"),
          ("x_mcp_subject", "root"), ("X_MCP_ROLES", "admin"), ("x-Mcp_Roles", "admin"),
          ("X-MCP-SUBJECT", "root"), ("x_mcp_scopes", "mcp:admin"), ("X_Mcp_Client_Id", "forged")]


def config(**overrides):
    return base_config([{"issuer": ISSUER, "jwks": {"inline": jwks(KEY)}, "roles_claims": KEYCLOAK_ROLES}],
                       [{"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]}],
                       identity_headers=IDENTITY_HEADERS, public_paths=["/healthz"]) | overrides


@pytest.fixture(scope="module")
def envoy(envoy_version, upstream):
    with Envoy(envoy_version, config(), upstream.port, trailers_listener=True) as e:
        yield e


def keycloak_token(roles=("reader", "offline_access")):
    return KEY.sign(claims(
        ISSUER, RESOURCE, sub="alice", roles=roles, scope="mcp:read mcp:write",
        resource_access={"mcp-server": {"roles": ["admin", "reader"]},
                         "account": {"roles": ["manage-account"]}}))


def folded(seen):
    """The headers the upstream got, names folded as a lenient HTTP stack
    reads them (lower case, `_` for `-`)."""
    return [(name.replace("_", "-"), value) for name, value in seen["header_list"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_identity_headers_carry_the_claims_and_client_sent_ones_never_reach_the_upstream(envoy, upstream,
                                                                                          transport):
    upstream.clear()
    token = keycloak_token()
    assert_allowed(post(envoy, LIST, token, SPOOFS, transport=transport), upstream)
    [seen] = upstream.requests
    headers = folded(seen)
    assert [v for k, v in headers if k == "x-mcp-subject"] == ["alice"], headers
    assert [v for k, v in headers if k == "x-mcp-roles"] == ["reader offline_access admin"], headers
    assert [v for k, v in headers if k == "x-mcp-scopes"] == ["mcp:read mcp:write"], headers
    assert [v for k, v in headers if k == "x-mcp-client-id"] == ["test-client"], headers
    assert not any(k == "authorization" for k, _ in headers), "the token is stripped by default"
    for part in token.split("."):
        assert all(part not in v for _, v in headers) and part not in seen["body"], "no part of the token"
    # Public paths carry no identity either.
    upstream.clear()
    assert send(transport, envoy, "GET", "/healthz", SPOOFS).status == 200
    [seen] = upstream.requests
    assert not any(k in IDENTITY_HEADERS for k, _ in folded(seen)), seen["header_list"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_role_that_could_be_read_as_two_is_left_out_of_the_header(envoy, upstream, transport):
    upstream.clear()
    token = KEY.sign(claims(ISSUER, RESOURCE, sub="alice", roles=["user", "admin x", "reader"], scope="mcp:read"))
    assert_allowed(post(envoy, LIST, token, transport=transport), upstream)
    [seen] = upstream.requests
    assert seen["headers"]["x-mcp-roles"] == "user reader"
    assert "left out" in envoy.logs()


def test_an_identity_value_with_spaces_around_it_is_left_out(envoy, upstream):
    """HTTP parsers drop spaces around a value: `" admin "` would arrive as
    `admin`."""
    upstream.clear()
    token = KEY.sign(claims(ISSUER, RESOURCE, sub=" admin ", roles=["reader"], scope="mcp:read"))
    assert_allowed(post(envoy, LIST, token), upstream)
    [seen] = upstream.requests
    assert "x-mcp-subject" not in seen["headers"]
    assert seen["headers"]["x-mcp-roles"] == "reader"


def test_token_is_forwarded_when_configured(envoy_version, upstream):
    token = keycloak_token()
    with Envoy(envoy_version, config(token_forwarding="forward"), upstream.port) as e:
        upstream.clear()
        assert_allowed(post(e, LIST, token), upstream)
        assert upstream.requests[0]["headers"]["authorization"] == f"Bearer {token}"
        assert upstream.requests[0]["headers"]["x-mcp-subject"] == "alice"
