"""`make demo`: Envoy with the built filter in front of a small upstream.
Shows the RFC 9728 metadata document, the 401 discovery challenge, an allowed
call, a denied call and a scope challenge, then stops everything it started."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Envoy, RecordingUpstream  # noqa: E402
from tokens import RsaKey, claims, jwks  # noqa: E402

RESOURCE = "https://mcp.example.com/mcp"
ISSUER = "https://idp.example.com/realms/mcp"


def step(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(envoy, method, path, body=None, headers=None):
    """Prints the exchange the way curl shows it (curl when installed)."""
    headers = headers or {}
    if shutil.which("curl"):
        cmd = ["curl", "-sS", "-i", "-X", method, f"http://127.0.0.1:{envoy.port}{path}"]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        if body is not None:
            cmd += ["--data-binary", json.dumps(body)]
        shown = ["curl", "-i", "-X", method, f"http://localhost:{envoy.port}{path}"]
        for k, v in headers.items():
            shown += ["-H", f"'{k}: {v[:24] + '…' if k == 'Authorization' else v}'"]
        if body is not None:
            shown += ["-d", f"'{json.dumps(body)}'"]
        print("$ " + " ".join(shown))
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
        print(out.replace("\r\n", "\n").rstrip())
        return int(out.split()[1])
    status, hdrs, data = envoy.request(method, path, body, headers)
    print(f"HTTP {status}")
    for k, vs in hdrs.items():
        for v in vs:
            print(f"{k}: {v}")
    print(data.decode(errors="replace"))
    return status


def main():
    key = RsaKey("demo-key")
    config = {
        "resource": RESOURCE,
        "scopes_supported": ["mcp:read", "mcp:write"],
        "resource_name": "Demo MCP server",
        "providers": [{"issuer": ISSUER, "jwks": {"inline": jwks(key)},
                       "roles_claims": ["realm_access.roles"]}],
        "rules": [
            {"name": "everyone lists", "effect": "allow", "methods": ["initialize", "tools/list", "ping"]},
            {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"],
             "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
            {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"],
             "roles": ["admin"], "scopes": ["mcp:write"]},
            {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]},
        ],
        "identity_headers": {"x-mcp-subject": "sub", "x-mcp-roles": "$roles"},
    }
    results = []
    step("starting a small upstream and Envoy 1.40.0 with mcp_authz.wasm")
    upstream = RecordingUpstream()
    envoy = Envoy("1.40.0", config, upstream.port)
    try:
        envoy.start()
        print(f"Envoy listening on 127.0.0.1:{envoy.port}, upstream on 127.0.0.1:{upstream.port}")

        step("1. RFC 9728 protected resource metadata (no token needed)")
        results.append(("metadata document", show(envoy, "GET", "/.well-known/oauth-protected-resource/mcp")))

        step("2. an MCP call without a token: 401 with the discovery challenge")
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_weather"}}
        results.append(("no token", show(envoy, "POST", "/mcp", call, {"Content-Type": "application/json"})))

        reader = key.sign(claims(ISSUER, RESOURCE, sub="reader-1", roles=["reader"], scope="mcp:read"))
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {reader}"}

        step("3. a reader calls get_weather: allowed, the upstream sees the verified identity, not the token")
        upstream.clear()
        results.append(("reader calls get_weather", show(envoy, "POST", "/mcp", call, auth)))
        seen = upstream.requests[-1]["headers"]
        print(f"upstream saw x-mcp-subject={seen.get('x-mcp-subject')!r} x-mcp-roles={seen.get('x-mcp-roles')!r} "
              f"authorization={'present' if 'authorization' in seen else 'absent'}")

        step("4. the reader calls delete_everything: 403, never reaches the upstream")
        upstream.clear()
        deny = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_everything"}}
        results.append(("reader calls delete_everything", show(envoy, "POST", "/mcp", deny, auth)))
        print(f"upstream saw {len(upstream.requests)} request(s)")

        step("5. an admin token without mcp:write calls set_config: 403 step-up challenge")
        admin = key.sign(claims(ISSUER, RESOURCE, sub="admin-1", roles=["admin"], scope="mcp:read"))
        write = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "set_config"}}
        results.append(("admin without mcp:write", show(envoy, "POST", "/mcp", write,
                                                          {**auth, "Authorization": f"Bearer {admin}"})))
    finally:
        envoy.stop()
        upstream.close()
        step("stopped Envoy and the upstream")

    step("summary")
    expected = [200, 401, 200, 403, 403]
    width = max(len(name) for name, _ in results)
    for (name, status), want in zip(results, expected):
        print(f"  {name:<{width}}  {status}  {'ok' if status == want else 'UNEXPECTED (wanted %d)' % want}")
    return 0 if [s for _, s in results] == expected else 1


if __name__ == "__main__":
    sys.exit(main())
