"""What introspection and token exchange cost per request, cached and not
(`bench/README.md`, "Calls to the authorization server"). Writes
`bench/RESULTS-authorization-server.md` and prints it.

One Envoy 1.40.0 (`--concurrency 1`) per variant, the route a
`direct_response` as in `bench/run.py`, the authorization server the tests'
scripted one (`tests/authorization_server.py`, a Python thread per
connection, on this machine) reached through an Envoy cluster. wrk: one
thread, 16 keep-alive connections, the same allowed `tools/call` POST.

- `jwt`: a JWT caller (verified once, then from the verified-token cache);
  no authorization server: the baseline.
- `introspection, cached`: one opaque token, introspected once.
- `introspection, miss`: a new opaque token on every request (60,000
  pre-made tokens per run, round robin): one introspection call each.
- `exchange, cached`: the JWT caller, `upstream_token`, exchanged once.
- `exchange, miss`: the same with `cache: false`: one exchange per request.

Figures: requests/s, p50 and p99 latency (wrk), and Envoy's CPU per request
(user + system CPU of the Envoy process over the run, per answered request).
A miss also costs the authorization server's own time, which is in the
latency but not in Envoy's CPU; here that server is a small Python one, so
the miss rows' requests/s say more about it than about the filter.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

import run as bench  # noqa: E402  (bench/run.py: wrk, loads, the Envoy bootstrap)
import harness  # noqa: E402
from authorization_server import (INTROSPECT_PATH, TOKEN_PATH, Reply, ScriptedAuthorizationServer,  # noqa: E402
                                  active, exchanged)
from tokens import RsaKey, claims, jwks  # noqa: E402

KEY = RsaKey("bench-1")
UPSTREAM_AUDIENCE = "downstream-api"
CONNECTIONS = 16


class AnswerEverything(ScriptedAuthorizationServer):
    """Every token is active; every exchange succeeds. Records nothing (a
    bench would grow the list without bound)."""

    def __init__(self):
        super().__init__(bench.ISSUER)
        self.active = json.dumps(active(bench.ISSUER, bench.RESOURCE, roles=[bench.ROLE], ttl=3600)).encode()
        now = int(time.time())
        self.issued = json.dumps(exchanged(fake_jwt({"iss": bench.ISSUER, "aud": UPSTREAM_AUDIENCE,
                                                     "exp": now + 3600}), expires_in=3600)).encode()

    def script(self, call):
        with self.lock:
            self.calls.clear()
        if call["path"] == INTROSPECT_PATH:
            return Reply(200, self.active)
        return Reply(200, self.issued)


def fake_jwt(payload):
    import base64
    part = lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2ln"


def plugin(as_port, exchange=None):
    config = bench.plugin_config(jwks(KEY))
    config["providers"][0]["introspection"] = {
        "cluster": "as", "url": f"http://127.0.0.1:{as_port}{INTROSPECT_PATH}", "client_id": "gw",
        "client_secret": "bench-secret", "cache_seconds": 600}
    if exchange is not None:
        config["upstream_token"] = {"cluster": "as", "token_endpoint": f"http://127.0.0.1:{as_port}{TOKEN_PATH}",
                                    "client_id": "gw", "client_secret": "bench-secret",
                                    "audience": UPSTREAM_AUDIENCE, "cache": exchange}
    return config


class Gateway(bench.BenchEnvoy):
    """bench/run.py's Envoy with the filter and a cluster to the
    authorization server."""

    def __init__(self, name, config, as_port):
        super().__init__(name, [harness.wasm_filter(config)], "{}")
        with open(self.config_path) as f:
            boot = json.load(f)
        boot["static_resources"]["clusters"] = [harness.cluster("as", as_port)]
        with open(self.config_path, "w") as f:
            json.dump(boot, f)


def measure(wrk, envoy, load_for_round, rounds, seconds):
    runs = []
    for i in range(rounds):
        runs.append(bench.run_wrk(wrk, envoy, load_for_round(i), int(seconds), CONNECTIONS, warmup=1 if i == 0 else 0))
    return {key: statistics.median(r[key] for r in runs)
            for key in ("rps", "p50_us", "p99_us", "cpu_us_per_req", "loadavg_before")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, do not write the results file")
    args = parser.parse_args()
    wrk = bench.ensure_wrk()
    work = tempfile.mkdtemp(prefix="mcp-authz-bench-as-")
    body = bench.rpc_body("tools/call", bench.ALLOWED_TOOL)
    jwt = KEY.sign(claims(bench.ISSUER, bench.RESOURCE, roles=[bench.ROLE], ttl=3600))
    server = AnswerEverything()
    rows = []

    def fixed(name, token):
        load = bench.Load(work, name, "/mcp", body, [token])
        return lambda _round: load

    def fresh(name, count=60000):
        return lambda i: bench.Load(work, f"{name}-{i}", "/mcp", body,
                                    [f"opaque-{i}-{n}-bench" for n in range(count)])

    variants = [
        ("jwt (no authorization server)", plugin(server.port), fixed("jwt", jwt)),
        ("introspection, cached", plugin(server.port), fixed("opaque", "opaque-the-one-bench-token")),
        ("introspection, miss", plugin(server.port), fresh("miss")),
        ("exchange, cached", plugin(server.port, exchange=True), fixed("xjwt", jwt)),
        ("exchange, miss", plugin(server.port, exchange=False), fixed("xjwt-miss", jwt)),
    ]
    try:
        for name, config, load in variants:
            with Gateway(name, config, server.port) as envoy:
                figures = measure(wrk, envoy, load, args.rounds, args.seconds)
                calls = sum(envoy.counter(f"wasmcustom.mcp_authz.{c}.call")
                            for c in ("introspection", "token_exchange"))
                rows.append((name, figures, calls))
                print(f"{name:32} {figures['rps']:8.0f} req/s  p50 {figures['p50_us'] / 1000:6.2f} ms  "
                      f"p99 {figures['p99_us'] / 1000:6.2f} ms  {figures['cpu_us_per_req']:6.0f} µs CPU/req  "
                      f"({calls} calls)", flush=True)
    finally:
        server.close()
    base = rows[0][1]["cpu_us_per_req"]
    lines = [
        "# Calls to the authorization server: what they cost",
        "",
        f"Written by `bench/authorization_server.py` on {time.strftime('%Y-%m-%d')}; "
        f"Envoy {bench.ENVOY_VERSION}, `--concurrency 1`, wrk 1 thread x {CONNECTIONS} connections, "
        f"{args.rounds} runs of {args.seconds:g} s per row (median); {os.cpu_count()} cores "
        f"({platform.machine()}), shared with other work (load average before each run in the last column).",
        "",
        "| variant | requests/s | p50 | p99 | Envoy CPU per request | over the JWT row | calls made | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, f, calls in rows:
        lines.append(f"| {name} | {f['rps']:.0f} | {f['p50_us'] / 1000:.2f} ms | {f['p99_us'] / 1000:.2f} ms | "
                     f"{f['cpu_us_per_req']:.0f} µs | {f['cpu_us_per_req'] - base:+.0f} µs | {calls} | "
                     f"{f['loadavg_before']:.2f} |")
    lines += ["", "A miss's latency includes the scripted authorization server's own time (Python, on the",
              "same two cores); Envoy's CPU per request is the filter's and Envoy's share alone.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (BENCH / "RESULTS-authorization-server.md").write_text(text)


if __name__ == "__main__":
    main()
