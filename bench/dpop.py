"""What a DPoP request costs against a bearer one, per proof algorithm.

Every DPoP request carries a fresh proof, and the filter verifies it every
time (the verified-token cache spares the token's signature, never the
proof's), so the difference is one signature check per request plus the
proof's parsing, its other checks and the replay memory's update.

One Envoy 1.40.0 (`--concurrency 1`, a `direct_response` route, the filter
wired as the README says with `dpop: "allowed"`); a client that sends, one
request at a time over one keep-alive connection, N requests with the same
(cached) token: as a bearer token, then as a DPoP-bound token with N
distinct proofs made beforehand with PyPI `jwcrypto`, for each proof
algorithm. The figure is Envoy's CPU time (utime + stime from /proc) per
request, so the client's own speed does not count.

    .venvs/test/bin/python bench/dpop.py [--requests N] [--rounds R] [--write]

Prints a table; `--write` writes it to bench/RESULTS-dpop.md.
"""

import argparse
import datetime
import http.client
import json
import platform
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
from dpop_client import DpopKey  # noqa: E402
from jwcrypto import jwk, jwt  # noqa: E402

ISSUER = "https://idp.bench.local/realms/mcp"
RESOURCE = "https://mcp.bench.local/mcp"
ALGS = ["ES256", "EdDSA", "RS256", "PS256", "ES384"]
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    import os
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Envoy(harness.Envoy):
    """The filter in front of a `direct_response` route."""

    def __init__(self, plugin):
        super().__init__("1.40.0", plugin, upstream_port=9, routes=[{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "{}"}}}])


def issuer_key():
    key = jwk.JWK.generate(kty="RSA", size=2048, kid="bench")
    return key


def token(key, jkt=None):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": RESOURCE, "sub": "bench", "iat": now, "exp": now + 3600,
              "scope": "mcp:read"}
    if jkt:
        claims["cnf"] = {"jkt": jkt}
    t = jwt.JWT(header={"alg": "RS256", "kid": "bench"}, claims=claims)
    t.make_signed_token(key)
    return t.serialize()


def run(envoy, requests):
    """Sends `requests` ((headers) lists) over one connection; returns
    Envoy's CPU microseconds per request."""
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    start = cpu_seconds(envoy.proc.pid)
    for headers in requests:
        conn.putrequest("POST", "/mcp")
        for name, value in [("content-type", "application/json"),
                            ("content-length", str(len(BODY)))] + headers:
            conn.putheader(name, value)
        conn.endheaders(BODY)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}: {resp.getheader('www-authenticate')}")
    used = cpu_seconds(envoy.proc.pid) - start
    conn.close()
    return used * 1e6 / len(requests)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    key = issuer_key()
    plugin = {"resource": RESOURCE,
              "providers": [{"issuer": ISSUER, "jwks": {"inline": {"keys": [key.export_public(as_dict=True)]}},
                             "algorithms": ["RS256"], "dpop": "allowed"}],
              "rules": [{"effect": "allow", "methods": ["tools/list"]}], "filter_lists": False}
    clients = {alg: DpopKey(alg) for alg in ALGS}
    bearer = token(key)
    bound = {alg: token(key, c.jkt) for alg, c in clients.items()}
    results = {"bearer": []}
    results.update({alg: [] for alg in ALGS})
    with Envoy(plugin) as envoy:
        for _ in range(args.rounds):
            results["bearer"].append(run(envoy, [[("authorization", f"Bearer {bearer}")]] * args.requests))
            for alg, client in clients.items():
                t = bound[alg]
                proofs = [client.proof("POST", RESOURCE, t) for _ in range(args.requests)]
                results[alg].append(run(envoy, [[("authorization", f"DPoP {t}"), ("dpop", p)]
                                                for p in proofs]))
    base = statistics.median(results["bearer"])
    lines = [
        "# DPoP against bearer, per proof algorithm",
        "",
        f"Written by `bench/dpop.py` on {datetime.date.today()} ({platform.machine()}, "
        f"{platform.processor() or platform.system()}); Envoy 1.40.0, `--concurrency 1`, "
        f"{args.requests} requests per run over one keep-alive connection, the same cached "
        f"RS256 token throughout, {args.rounds} rounds (median, and the range).",
        "Envoy's CPU time per request (utime + stime), a `direct_response` behind the filter.",
        "",
        "| request | Envoy CPU µs per request | range | over bearer |",
        "| --- | --- | --- | --- |",
        f"| bearer (cached token) | {base:,.0f} | {min(results['bearer']):,.0f}–{max(results['bearer']):,.0f} | — |",
    ]
    for alg in ALGS:
        m = statistics.median(results[alg])
        lines.append(f"| DPoP, {alg} proof | {m:,.0f} | {min(results[alg]):,.0f}–{max(results[alg]):,.0f} | "
                     f"+{m - base:,.0f} µs ({m / base:.1f}×) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (BENCH / "RESULTS-dpop.md").write_text(text)


if __name__ == "__main__":
    main()
