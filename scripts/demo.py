"""`make demo`: the whole story on one machine, with the same real stack as
the interop tests (`tests/interop/stack.py`):

- the authorization server: npm `oidc-provider`, set up like a Keycloak
  realm (`tests/interop/authorization_server.mjs`; alice is a reader, carol
  an admin, login and consent are headless);
- the MCP server: the official Python SDK's (`tests/mcp_upstream.py`), which
  records every request that reaches it;
- Envoy 1.40.0 with the built filter in front of it, the signing keys
  discovered from the issuer and fetched through an Envoy cluster.

Then a narrated client session:

1. the stack starts;
2. the discovery flow, step by step, done by hand: the bare 401, the
   protected resource metadata, the authorization server metadata, dynamic
   registration, authorization code + PKCE (alice logs in), the token's claims;
3. alice with the official Python SDK client (which does that flow on its
   own): the filtered tool list, an allowed call, a refused call that never
   reaches the MCP server;
4. carol, an admin who first grants only `mcp:read`: `set_config` meets the
   `insufficient_scope` challenge, the SDK steps up, the call goes through;
   `delete_everything` is still refused (deny wins);
5. everything is stopped (also on an error or Ctrl-C), and a summary table
   says what was expected and what happened. Exit 0 only when all matched.

Token strings are never printed: only their decoded claims.
"""

import base64
import hashlib
import json
import logging
import re
import secrets
import shutil
import signal
import sys
import time
import traceback
from importlib.metadata import version as package_version
from pathlib import Path
from urllib.parse import urlencode, urlparse

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "tests", ROOT / "tests" / "interop", ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import anyio  # noqa: E402
import httpx2  # noqa: E402

import demo_client  # noqa: E402
from harness import WASM, free_port  # noqa: E402
from mcp_upstream import McpUpstream, build_server  # noqa: E402
from oauth_helpers import REDIRECT_URI, next_hop  # noqa: E402
from stack import HERE as INTEROP  # noqa: E402
from stack import SCOPES, AuthorizationServer, InteropEnvoy, plugin_config  # noqa: E402

ENVOY_VERSION = "1.40.0"
TTY = sys.stdout.isatty()


# ---------------------------------------------------------------------------
# Printing

def bold(text):
    return f"\033[1m{text}\033[0m" if TTY else text


def dim(text):
    return f"\033[2m{text}\033[0m" if TTY else text


def section(title):
    print(f"\n{bold('== ' + title)}", flush=True)


def say(text="", indent=2):
    print(" " * indent + text if text else "", flush=True)


def short(value, limit=72):
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def trimmed(doc, limit=72):
    """A copy of a JSON document with long strings cut, for display."""
    if isinstance(doc, dict):
        return {k: trimmed(v, limit) for k, v in doc.items()}
    if isinstance(doc, list):
        return [trimmed(v, limit) for v in doc]
    if isinstance(doc, str):
        return short(doc, limit)
    return doc


def show_json(doc, indent=4):
    for line in json.dumps(trimmed(doc), indent=2).splitlines():
        say(line, indent)


class Places:
    """Names the servers in URLs: `envoy`, `auth`, so that lines stay short."""

    def __init__(self):
        self.bases = {}

    def add(self, label, base):
        self.bases[base] = label

    def __call__(self, url):
        for base, label in self.bases.items():
            if url.startswith(base):
                path = url[len(base):] or "/"
                return f"{label:<5} {short(path, 48)}"
        return short(url, 64)


PLACE = Places()


# ---------------------------------------------------------------------------
# Expected vs actual

class Checks:
    def __init__(self):
        self.rows = []

    def __call__(self, step, expected, actual, ok=None):
        ok = (expected == actual) if ok is None else bool(ok)
        self.rows.append((step, str(expected), str(actual), ok))
        if not ok:
            say(f"!! {step}: expected {expected}, got {actual}", 4)
        return ok

    def table(self):
        headers = ("step", "expected", "actual", "")
        rows = [(s, short(e, 40), short(a, 40), "ok" if ok else "MISMATCH") for s, e, a, ok in self.rows]
        widths = [max(len(r[i]) for r in rows + [headers]) for i in range(4)]
        line = "  ".join("{:<%d}" % w for w in widths)
        say(line.format(*headers).rstrip())
        say(line.format(*("-" * w for w in widths)).rstrip())
        for row in rows:
            say(line.format(*row).rstrip())

    def all_ok(self):
        return bool(self.rows) and all(ok for *_, ok in self.rows)


CHECK = Checks()


# ---------------------------------------------------------------------------
# 1. The stack

class Stack:
    """What the demo starts, in the order it starts it; stopped in reverse."""

    def __init__(self):
        self.envoy_port = free_port()
        self.resource = f"http://127.0.0.1:{self.envoy_port}/mcp"
        self.auth = AuthorizationServer(free_port(), [self.resource])
        self.mcp = McpUpstream()
        self.envoy = None
        self.started = []

    def start(self):
        oidc_version = json.loads((INTEROP / "node_modules/oidc-provider/package.json").read_text())["version"]
        self._start("the authorization server", f"(npm oidc-provider {oidc_version}) on {self.auth.issuer}",
                    self.auth, "alice is a reader, carol an admin")
        self._start("the MCP server", f"(official Python SDK, mcp {package_version('mcp')}) "
                    f"on http://127.0.0.1:{self.mcp.port}/mcp", self.mcp)
        config = plugin_config(self.resource, self.auth.issuer)
        config["resource_name"] = "mcp-authz demo"
        self.envoy = InteropEnvoy(ENVOY_VERSION, self.envoy_port, config, self.mcp.port, self.auth.port)
        # InteropEnvoy.start waits for the filter's first key fetch: discovery, then the JWKS.
        self._start(f"Envoy {ENVOY_VERSION}", f"with {WASM.relative_to(ROOT)} on {self.resource}", self.envoy)
        stats = self.envoy.stats()
        say(f"the filter found the issuer's jwks_uri by discovery and fetched the keys "
            f"(jwks_fetch.ok = {stats.get('wasmcustom.mcp_authz.jwks_fetch.ok', 0)})")
        PLACE.add("envoy", f"http://127.0.0.1:{self.envoy_port}")
        PLACE.add("auth", self.auth.issuer)

    def _start(self, name, detail, server, note=None):
        print(f"  starting {name} {detail} ... ", end="", flush=True)
        began = time.monotonic()
        self.started.append((name, server))
        try:
            server.start()
        except BaseException:
            print("FAILED", flush=True)
            raise
        print(f"ok ({time.monotonic() - began:.1f} s{'; ' + note if note else ''})", flush=True)

    def stop(self):
        """Stops everything started; returns the names of what is still running."""
        still = []
        for name, server in reversed(self.started):
            print(f"  stopping {name} ... ", end="", flush=True)
            try:
                server.stop()
            except Exception as e:  # noqa: BLE001 - go on stopping the others
                print(f"error: {e}", flush=True)
            proc = getattr(server, "proc", None)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc is not None and proc.poll() is None:
                still.append(name)
                print("STILL RUNNING", flush=True)
            else:
                print(f"ok (pid {proc.pid if proc else '-'} exited)", flush=True)
        self.started = []
        return still

    def directories(self):
        return [d for d in (self.auth.dir, self.mcp.dir, self.envoy.dir if self.envoy else None) if d]


# ---------------------------------------------------------------------------
# 2. Discovery, step by step, by hand

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def show_claims(claims, header=None, indent=4):
    now = time.time()
    rows = []
    if header:
        rows.append(("(header) alg / kid", f"{header.get('alg')} / {header.get('kid')}"))
    for key in ("iss", "sub", "aud", "client_id", "scope"):
        if key in claims:
            rows.append((key, claims[key]))
    rows.append(("realm_access.roles", claims.get("realm_access", {}).get("roles")))
    if "exp" in claims:
        rows.append(("exp", f"in {round((claims['exp'] - now) / 60)} minutes"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        say(f"{key:<{width}}  {value if isinstance(value, str) else json.dumps(value)}", indent)


def discovery_by_hand(stack):
    resource = stack.resource
    with httpx2.Client(timeout=10, follow_redirects=False) as http:
        section("2a. a client calls the MCP server with no token")
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        say(f"POST {resource}   (no Authorization header)")
        say(json.dumps(body), 7)
        r = http.post(resource, json=body, headers={"Accept": "application/json, text/event-stream"})
        challenge = r.headers.get("www-authenticate", "")
        say(f"-> HTTP {r.status_code}", 4)
        say(f"   WWW-Authenticate: {challenge}", 4)
        say(f"   {r.text}", 4)
        match = re.search(r'resource_metadata="([^"]+)"', challenge)
        CHECK("2a no token", "401 + resource_metadata",
              f"{r.status_code} + {'resource_metadata' if match else 'no resource_metadata'}")
        if not match:
            raise RuntimeError("the 401 named no resource_metadata")
        hint = re.search(r'scope="([^"]*)"', challenge)
        requested_scope = hint.group(1) if hint else " ".join(SCOPES)

        section("2b. the protected resource metadata (RFC 9728) the 401 points to")
        say(f"GET {match.group(1)}")
        r = http.get(match.group(1))
        say(f"-> HTTP {r.status_code} {r.headers.get('content-type')}", 4)
        prm = r.json()
        show_json(prm, 4)
        CHECK("2b resource metadata", "200, resource = this server",
              f"{r.status_code}, resource = {'this server' if prm.get('resource') == resource else prm.get('resource')}")
        issuer = prm["authorization_servers"][0]

        section("2c. the authorization server's metadata")
        rfc8414 = f"{issuer}/.well-known/oauth-authorization-server"
        r = http.get(rfc8414)
        say(f"GET {rfc8414}  -> HTTP {r.status_code}")
        oidc = f"{issuer}/.well-known/openid-configuration"
        as_meta = r.json() if r.status_code == 200 else None
        if as_meta is None:
            r = http.get(oidc)
            say(f"GET {oidc}  -> HTTP {r.status_code}   (OpenID discovery, the fallback)")
            as_meta = r.json() if r.status_code == 200 else {}
        shown = ["issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri",
                 "code_challenge_methods_supported", "grant_types_supported", "scopes_supported"]
        show_json({k: as_meta.get(k) for k in shown if k in as_meta}, 4)
        say(dim(f"({len(as_meta) - len([k for k in shown if k in as_meta])} more fields not shown)"), 4)
        CHECK("2c authorization server metadata", "issuer matches, S256",
              f"issuer {'matches' if as_meta.get('issuer') == issuer else 'differs'}, "
              f"{'S256' if 'S256' in as_meta.get('code_challenge_methods_supported', []) else 'no S256'}")

        section("2d. dynamic client registration (RFC 7591)")
        registration = {"client_name": "mcp-authz demo (by hand)", "redirect_uris": [REDIRECT_URI],
                        "grant_types": ["authorization_code"], "response_types": ["code"],
                        "token_endpoint_auth_method": "none"}
        say(f"POST {as_meta['registration_endpoint']}")
        show_json(registration, 4)
        r = http.post(as_meta["registration_endpoint"], json=registration)
        client = r.json()
        say(f"-> HTTP {r.status_code}: client_id {client.get('client_id')} (a public client: no secret)", 4)
        CHECK("2d registration", 201, r.status_code)
        client_id = client["client_id"]

        section("2e. authorization code + PKCE (S256), for the resource; alice logs in")
        verifier = b64url(secrets.token_bytes(32))
        state = b64url(secrets.token_bytes(12))
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
                  "scope": requested_scope, "resource": resource, "state": state,
                  "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
                  "code_challenge_method": "S256"}
        say(f"GET {as_meta['authorization_endpoint']}?…")
        width = max(len(k) for k in params)
        for k, v in params.items():
            say(f"{k:<{width}}  {short(v, 60)}", 6)
        url = as_meta["authorization_endpoint"] + "?" + urlencode(params)
        hops, code = [], None
        with httpx2.Client(timeout=10, follow_redirects=False, headers={"X-Test-Account": "alice"}) as browser:
            for _ in range(20):
                r = browser.get(url)
                hops.append(f"{urlparse(url).path.split('/')[1] or '/'} {r.status_code}")
                url, back = next_hop(url, r)
                if back is not None:
                    code = back["code"][0]
                    break
        say(f"the (headless) browser: {' -> '.join(hops)} -> redirect_uri", 4)
        say(f"   login as alice, consent given; back at the redirect_uri with a code "
            f"({'state matches' if back.get('state', [None])[0] == state else 'STATE MISMATCH'}, "
            f"iss {back.get('iss', ['?'])[0]})", 4)
        CHECK("2e authorization code + PKCE", "code, state matches",
              f"{'code' if code else 'no code'}, state {'matches' if back.get('state', [None])[0] == state else 'differs'}")

        section("2f. the token request (code + code_verifier + resource)")
        say(f"POST {as_meta['token_endpoint']}   grant_type=authorization_code, code, code_verifier, resource")
        r = http.post(as_meta["token_endpoint"], data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "client_id": client_id, "code_verifier": verifier, "resource": resource})
        answer = r.json()
        token = answer.get("access_token", "")
        say(f"-> HTTP {r.status_code}: token_type {answer.get('token_type')}, expires_in {answer.get('expires_in')}, "
            f"scope {answer.get('scope')!r}", 4)
        say(f"   access_token: a JWT of {len(token)} characters (not shown); its claims:", 4)
        header, claims = demo_client.jwt_parts(token)
        show_claims(claims, header, 6)
        roles = claims.get("realm_access", {}).get("roles")
        CHECK("2f token", "aud = this server, roles reader",
              f"aud = {'this server' if claims.get('aud') == resource else claims.get('aud')}, "
              f"roles {' '.join(roles or []) or 'none'}")
        say("The filter checks this signature with the keys it fetched from the issuer's jwks_uri, then the")
        say("issuer, the audience (this resource only), the expiry, and decides from roles and scopes.")


# ---------------------------------------------------------------------------
# 3. and 4. Sessions with the official Python SDK client

def is_token_request(entry):
    return entry["method"] == "POST" and entry["url"].endswith("/token")


def show_exchanges(log, resource, start=0, indent=4):
    """The SDK's HTTP exchanges from `start` up to the first answered MCP
    request, one line each; the headless browser's visit to the
    authorization endpoint shown as one line before each token request."""
    done = sum(1 for h in log["http"][:start] if is_token_request(h))
    authorizations = iter(log["authorizations"][done:])
    for h in log["http"][start:]:
        if is_token_request(h):
            auth = next(authorizations, None)
            if auth:
                say(f"GET  {PLACE(auth_url(log, h)):<52} (browser: scope {auth['scope']!r}, "
                    f"{auth['code_challenge_method']}; user approves {auth['consent'] or 'all'})", indent)
        label = f"  Mcp-Method: {h['mcp_method']}" if h["mcp_method"] else ""
        say(f"{h['method']:<4} {PLACE(h['url']):<52} {h['status']}{label}", indent)
        if h["url"] == resource and h["status"] == 200:
            break


def auth_url(log, token_entry):
    """The authorization endpoint, next to the token endpoint the SDK used."""
    return token_entry["url"][: -len("/token")] + "/auth"


def error_body(entry):
    try:
        return json.loads(entry["body"])
    except (TypeError, ValueError):
        return entry["body"]


def rpc_seen(seen):
    return [(m["method"], m["name"]) for r in seen for m in r["rpc"]]


def describe_seen(seen):
    parts = []
    for method, name in rpc_seen(seen):
        parts.append(f"{method} {name}" if name else method)
    return ", ".join(parts)


async def server_tools():
    """The tools the MCP server defines (its own code, asked directly)."""
    tools = [t.name for t in await build_server().list_tools()]
    # Building the SDK's server turns on INFO logging for everything; keep the output ours.
    logging.getLogger().setLevel(logging.WARNING)
    return tools


async def reader_session(stack):
    section("3. alice (reader) with the official Python SDK client")
    all_tools = await server_tools()
    say(f"The MCP server has {len(all_tools)} tools: {', '.join(all_tools)}.")
    say("The SDK starts with no token and does the discovery flow of step 2 on its own:")
    stack.mcp.clear()
    async with demo_client.session(stack.resource, "alice") as (client, log):
        show_exchanges(log, stack.resource)
        token = log["tokens"][-1]["claims"] if log["tokens"] else {}
        say(f"SDK connected (protocol {log['protocol_version']}), registered as {log['registered_client_id']}; "
            f"token scope {token.get('scope')!r}, roles {token.get('realm_access', {}).get('roles')}")

        say("")
        say(bold("tools/list") + " (the filter removes what alice may not call)")
        tools = await demo_client.list_tools(client)
        say(f"-> {len(tools)} of {len(all_tools)} tools: {', '.join(tools)}", 4)
        CHECK("3 alice: tools/list", "get_weather, search", ", ".join(tools))

        say("")
        say(bold("call get_weather") + " {\"city\": \"Paris\"}")
        allowed = await demo_client.call(client, "get_weather", {"city": "Paris"})
        say(f"-> {allowed['result']['text'] if allowed['ok'] else 'ERROR ' + json.dumps(allowed['error'])}", 4)
        CHECK("3 alice: get_weather", "Weather in Paris: sunny, 21 C",
              allowed["result"]["text"] if allowed["ok"] else allowed["error"]["message"])

        say("")
        say(bold("call delete_everything") + " {}")
        mark = len(log["http"])
        denied = await demo_client.call(client, "delete_everything", {})
        answers = [h for h in log["http"][mark:] if h["url"] == stack.resource]
        refusal = answers[-1] if answers else None
        if refusal:
            say(f"-> the filter answers HTTP {refusal['status']}: {json.dumps(error_body(refusal))}", 4)
        if not denied["ok"]:
            e = denied["error"]
            say(f"   the SDK raises {e['type']}: code {e.get('code')}, {e['message']!r}", 4)
        CHECK("3 alice: delete_everything", "403, -32003",
              f"{refusal['status'] if refusal else '-'}, {denied.get('error', {}).get('code', 'allowed')}")

    seen = stack.mcp.seen()
    rpc = rpc_seen(seen)
    say("")
    say(bold("what the MCP server saw") + " (its own record of every request that reached it)")
    say(f"{len(seen)} requests: {describe_seen(seen)}", 4)
    subjects = sorted({s for r in seen for s in r["headers"]["x-mcp-subject"]})
    roles = sorted({s for r in seen for s in r["headers"]["x-mcp-roles"]})
    tokens = sum(1 for r in seen if r["authorization"])
    say(f"identity headers set by the filter: x-mcp-subject {subjects}, x-mcp-roles {roles}; "
        f"requests carrying a token: {tokens}", 4)
    reached = ("tools/call", "get_weather") in rpc
    never = ("tools/call", "delete_everything") not in rpc
    say(f"get_weather reached it: {'yes' if reached else 'NO'}; delete_everything reached it: "
        f"{'never' if never else 'YES'}", 4)
    CHECK("3 MCP server saw", "get_weather only, no token",
          f"{'get_weather' if reached else 'no get_weather'}{' only' if never else ' + delete_everything'}, "
          f"{'no token' if tokens == 0 else 'token seen'}")


async def admin_session(stack):
    section("4. carol (admin) first grants only mcp:read, then steps up")
    stack.mcp.clear()
    async with demo_client.session(stack.resource, "carol", consents=["mcp:read", None]) as (client, log):
        first = log["tokens"][0]["claims"] if log["tokens"] else {}
        say("The SDK does the same discovery flow; at the consent page carol approves only mcp:read:")
        say(f"token scope {first.get('scope')!r}, roles {first.get('realm_access', {}).get('roles')}", 4)
        tools = await demo_client.list_tools(client)
        say(f"tools/list -> {', '.join(tools)}   (set_config needs mcp:write: hidden)")
        CHECK("4 carol (mcp:read): tools/list", "get_weather, search", ", ".join(tools))

        say("")
        say(bold("call set_config") + " {\"key\": \"mode\", \"value\": \"fast\"}")
        mark, tokens_before = len(log["http"]), len(log["tokens"])
        result = await demo_client.call(client, "set_config", {"key": "mode", "value": "fast"})
        exchanges = log["http"][mark:]
        challenge = next((h for h in exchanges if h["status"] == 403), None)
        if challenge:
            say(f"-> HTTP 403 {json.dumps(error_body(challenge))}", 4)
            say(f"   WWW-Authenticate: {challenge['www_authenticate']}", 4)
        wanted = 'error="insufficient_scope", scope="mcp:write"'
        CHECK("4 carol (mcp:read): set_config", "403 insufficient_scope mcp:write",
              "no 403" if not challenge else "403 insufficient_scope mcp:write"
              if wanted in (challenge["www_authenticate"] or "") else f"403 {challenge['www_authenticate']}")
        say("the SDK steps up on its own:", 4)
        show_exchanges(log, stack.resource, start=mark + 1, indent=6)
        new = log["tokens"][-1]["claims"] if len(log["tokens"]) > tokens_before else {}
        say(f"new token: scope {new.get('scope')!r}, roles {new.get('realm_access', {}).get('roles')}", 4)
        say(f"-> {result['result']['text'] if result['ok'] else 'ERROR ' + json.dumps(result['error'])}", 4)
        granted = (new.get("scope") or "").split()
        CHECK("4 step-up, set_config again", "+mcp:write; config mode set to fast",
              ("+mcp:write; " if "mcp:write" in granted else f"scope {new.get('scope')}; ")
              + (result["result"]["text"] if result["ok"] else result["error"]["message"]))

        tools = await demo_client.list_tools(client)
        say(f"tools/list -> {', '.join(tools)}")

        say("")
        say(bold("call delete_everything") + " {}   (rule \"nobody deletes\": deny wins, even for an admin)")
        mark = len(log["http"])
        denied = await demo_client.call(client, "delete_everything", {})
        answers = [h for h in log["http"][mark:] if h["url"] == stack.resource]
        if answers:
            say(f"-> HTTP {answers[-1]['status']} {json.dumps(error_body(answers[-1]))}", 4)
        CHECK("4 carol: delete_everything", "403, -32003",
              f"{answers[-1]['status'] if answers else '-'}, {denied.get('error', {}).get('code', 'allowed')}")

    seen = stack.mcp.seen()
    rpc = rpc_seen(seen)
    set_config = rpc.count(("tools/call", "set_config"))
    deleted = rpc.count(("tools/call", "delete_everything"))
    subjects = sorted({s for r in seen for s in r["headers"]["x-mcp-subject"]})
    say("")
    say(bold("what the MCP server saw"))
    say(f"{len(seen)} requests: {describe_seen(seen)}", 4)
    say(f"x-mcp-subject {subjects}; requests carrying a token: {sum(1 for r in seen if r['authorization'])}", 4)
    say(f"set_config {set_config} time(s): the call after the step-up (the challenged one never reached it); "
        f"delete_everything {deleted} time(s)", 4)
    CHECK("4 MCP server saw", "set_config 1, delete_everything 0",
          f"set_config {set_config}, delete_everything {deleted}")


def counters(envoy):
    stats = envoy.stats()
    names = ["allowed", "denied.no_token", "denied.forbidden", "denied.insufficient_scope",
             "list_items_removed", "jwks_fetch.ok"]
    return ", ".join(f"{n} {stats.get('wasmcustom.mcp_authz.' + n, 0)}" for n in names)


# ---------------------------------------------------------------------------

def main():
    # Ctrl-C raises KeyboardInterrupt; a SIGTERM is made to unwind the same way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    stack = Stack()
    failure = None
    try:
        section("1. starting the stack")
        stack.start()
        discovery_by_hand(stack)
        anyio.run(reader_session, stack)
        anyio.run(admin_session, stack)
        section("the filter's counters (Envoy admin /stats)")
        say(counters(stack.envoy))
    except KeyboardInterrupt:
        failure = "interrupted"
        print("\ninterrupted", flush=True)
    except BaseException as e:  # noqa: BLE001 - report, stop everything, fail
        first, *rest = (str(e) or type(e).__name__).splitlines() or [""]
        failure = f"{type(e).__name__}: {first}"
        print(f"\nthe demo stopped early: {failure}", flush=True)
        for line in rest[-8:]:
            say(short(line, 160), 4)
        frames = traceback.extract_tb(e.__traceback__)
        if frames and not isinstance(e, SystemExit):
            say(f"(at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})", 4)
    finally:
        # Stopping must not be cut short by a second Ctrl-C (the children got the first one too).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        section("5. stopping everything")
        still = stack.stop()
        CHECK("5 everything stopped", "nothing left running", ", ".join(still) + " still running" if still
              else "nothing left running")

    if failure:
        CHECK("demo ran to the end", "yes", f"no ({short(failure, 40)})")
        say("logs: " + "  ".join(stack.directories()))
    else:
        for d in stack.directories():
            shutil.rmtree(d, ignore_errors=True)

    section(f"summary ({time.monotonic() - began:.0f} s)")
    CHECK.table()
    ok = CHECK.all_ok() and not failure
    say("")
    say("all steps as expected" if ok else "SOME STEPS DID NOT GO AS EXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
