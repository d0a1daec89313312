"""What the end-to-end tests, the interop tests and `make soak` share about
the filter's configuration: the protected resource and the issuer the tests
mint tokens for, and the skeleton of a configuration with inline keys. Each
test keeps its own rules (and whatever else it tests) in its own file."""

from tokens import jwks

RESOURCE = "https://mcp.example.com/mcp"
METADATA_URL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
ISSUER = "https://idp.example.com/realms/mcp"
SCOPES = ["mcp:read", "mcp:write"]

# The policy over the tools of the SDK's MCP server (`mcp_upstream.py`):
# everyone lists, readers (and admins) with `mcp:read` call `get_*` and
# `search`, admins with `mcp:write` call anything, nobody deletes.
TOOL_RULES = [
    {"name": "everyone lists", "effect": "allow",
     "methods": ["initialize", "server/discover", "notifications/*", "ping",
                 "tools/list", "prompts/list", "resources/list"]},
    {"name": "readers read", "effect": "allow", "methods": ["tools/call"],
     "names": ["get_*", "search"], "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
    {"name": "admins write", "effect": "allow", "methods": ["tools/call"],
     "names": ["*"], "roles": ["admin"], "scopes": ["mcp:write"]},
    {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]},
]


def inline_provider(*keys, roles_claims=("realm_access.roles",)):
    """ISSUER with `keys` inline; roles read from `roles_claims` (left out
    when None)."""
    provider = {"issuer": ISSUER, "jwks": {"inline": jwks(*keys)}}
    if roles_claims is not None:
        provider["roles_claims"] = list(roles_claims)
    return provider


def base_config(providers, rules, /, **fields):
    """A configuration for RESOURCE with these providers and rules; `fields`
    (any field, `resource`, `providers` and `rules` too) are set last."""
    return {"resource": RESOURCE, "providers": providers, "rules": rules, **fields}
