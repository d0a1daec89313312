"""`make soak`: a bounded soak run of the filter in one Envoy 1.40.0.

Envoy (`--concurrency 2`) with the built filter sits in front of a small MCP
upstream; SOAK_THREADS client threads (keep-alive `http.client` connections)
send mixed traffic for SOAK_SECONDS: allowed `tools/call`, denied calls,
`tools/list` (answered with a list the filter cuts), requests without a token
and requests with an expired token. Tokens rotate: a pool of freshly minted
tokens (RSA and EC keys, unique `jti`) is replaced every SOAK_ROTATE_SECONDS,
so the filter's verified-token cache (1024 entries per worker) keeps
verifying, inserting and evicting.

Every answer is checked against the status its kind of request must get; any
other status, or a connection error, is an error. Envoy's memory is sampled
at the start, every minute and at the end: admin `/memory` `allocated` and
`heap_size` (Envoy's own heap), the wasm stats, and the process's resident
set (VmRSS), which is where the VMs' linear memory shows: V8 maps it outside
Envoy's allocator, so a leak inside the filter would not move `allocated`.

Exit status: non-zero when any request got an unexpected answer, or when
`allocated` or VmRSS at the end exceeds its value after the first minute by
more than SOAK_MEMORY_MARGIN (default 0.20, i.e. 20 %).

Environment: SOAK_SECONDS (600), SOAK_THREADS (4), SOAK_ROTATE_SECONDS (3),
SOAK_POOL (24 tokens per kind), SOAK_PAUSE_MS (2: pause between a thread's
requests, to keep the load modest on a shared machine), SOAK_MEMORY_MARGIN.
"""

import http.client
import http.server
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from configs import ISSUER, RESOURCE, SCOPES, base_config, inline_provider  # noqa: E402
from harness import Envoy, request  # noqa: E402
from tokens import EcKey, RsaKey, claims  # noqa: E402

ENVOY_VERSION = "1.40.0"

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
THREADS = int(os.environ.get("SOAK_THREADS", "4"))
ROTATE_SECONDS = float(os.environ.get("SOAK_ROTATE_SECONDS", "3"))
POOL = int(os.environ.get("SOAK_POOL", "24"))
PAUSE = float(os.environ.get("SOAK_PAUSE_MS", "2")) / 1000
MEMORY_MARGIN = float(os.environ.get("SOAK_MEMORY_MARGIN", "0.20"))
SAMPLE_EVERY = 60.0

RSA = RsaKey("soak-rsa")
EC = EcKey("soak-ec")

CONFIG = base_config([inline_provider(RSA, EC)], [
    {"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]},
    {"name": "readers read", "effect": "allow", "methods": ["tools/call"],
     "names": ["get_*", "search"], "roles": ["reader", "admin"]},
    {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"], "roles": ["admin"]},
    {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]},
], scopes_supported=SCOPES, identity_headers={"x-mcp-subject": "sub", "x-mcp-roles": "$roles"})

TOOLS = [{"name": n, "description": f"the {n} tool", "inputSchema": {"type": "object"}}
         for n in ["get_weather", "search", "set_config", "delete_everything"]]

# Request kinds: (name, expected status). Weights give the mix.
KINDS = [
    ("allowed_call", 200, 4),
    ("denied_call", 403, 2),
    ("tools_list", 200, 3),
    ("no_token", 401, 1),
    ("expired_token", 401, 1),
]


class ListUpstream:
    """Answers `tools/list` with four tools (the filter cuts the list for a
    reader) and anything else with a small JSON-RPC result. Keeps nothing."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if body.get("method") == "tools/list":
                    result = {"tools": TOOLS, "cacheScope": "public"}
                else:
                    result = {"content": [{"type": "text", "text": "ok"}]}
                out = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": result}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TokenPool:
    """Freshly minted tokens, replaced wholesale every ROTATE_SECONDS."""

    def __init__(self):
        self.lock = threading.Lock()
        self.minted = 0
        self.rotate()

    def mint(self, roles, ttl):
        key = random.choice((RSA, EC))
        c = claims(ISSUER, RESOURCE, sub=f"user-{random.randrange(1000)}", roles=roles,
                   ttl=ttl, jti=uuid.uuid4().hex)
        self.minted += 1
        return key.sign(c)

    def rotate(self):
        fresh = {
            "reader": [self.mint(["reader"], ttl=300) for _ in range(POOL)],
            # Expired well beyond the default 60 s clock skew.
            "expired": [self.mint(["reader"], ttl=-600) for _ in range(max(1, POOL // 4))],
        }
        with self.lock:
            self.tokens = fresh

    def pick(self, kind):
        with self.lock:
            return random.choice(self.tokens[kind])


def build_request(kind, pool, rid):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if kind == "tools_list":
        body = {"jsonrpc": "2.0", "id": rid, "method": "tools/list"}
    elif kind == "denied_call":
        body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": random.choice(["set_config", "delete_everything"]), "arguments": {}}}
    else:
        body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": random.choice(["get_weather", "search"]), "arguments": {"city": "Oslo"}}}
    if kind == "expired_token":
        headers["Authorization"] = "Bearer " + pool.pick("expired")
    elif kind != "no_token":
        headers["Authorization"] = "Bearer " + pool.pick("reader")
    return json.dumps(body).encode(), headers


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = Counter()
        self.by_status = Counter()
        self.errors = Counter()
        self.examples = []
        self.reconnects = 0

    def error(self, what):
        with self.lock:
            self.errors[what.split(":")[0]] += 1
            if len(self.examples) < 10:
                self.examples.append(what)


def client(envoy_port, pool, stats, deadline, seed):
    rng = random.Random(seed)
    population = [k for k, _, w in KINDS for _ in range(w)]
    expected = {k: s for k, s, _ in KINDS}
    conn = http.client.HTTPConnection("127.0.0.1", envoy_port, timeout=15)
    rid = 0
    while time.time() < deadline:
        kind = rng.choice(population)
        rid += 1
        body, headers = build_request(kind, pool, rid)
        try:
            conn.request("POST", "/mcp", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status = resp.status
            closing = resp.will_close
        except (OSError, http.client.HTTPException) as e:
            stats.error(f"connection error: {kind}: {type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", envoy_port, timeout=15)
            continue
        with stats.lock:
            stats.by_kind[kind] += 1
            stats.by_status[status] += 1
        if status != expected[kind]:
            stats.error(f"unexpected status: {kind}: got {status}, expected {expected[kind]}: {data[:200]!r}")
        elif kind == "tools_list":
            names = [t.get("name") for t in json.loads(data)["result"]["tools"]]
            if names != ["get_weather", "search"]:
                stats.error(f"unfiltered list: {kind}: {names}")
        if closing:
            # Envoy may close after a local reply; that is not an error.
            with stats.lock:
                stats.reconnects += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", envoy_port, timeout=15)
        if PAUSE:
            time.sleep(PAUSE)
    conn.close()


def rss(pid):
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory(envoy):
    """Envoy's memory figures (bytes) and the wasm stats."""
    _, _, body = request(envoy.admin_port, "GET", "/memory")
    m = json.loads(body)
    _, _, wasm = request(envoy.admin_port, "GET", "/stats?filter=wasm")
    wasm_stats = {}
    for line in wasm.decode().splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            wasm_stats[name.strip()] = int(value)
    return {"allocated": int(m["allocated"]), "heap_size": int(m["heap_size"]), "rss": rss(envoy.proc.pid),
            "pageheap_unmapped": int(m.get("pageheap_unmapped", 0)), "wasm": wasm_stats}


def mib(n):
    return f"{n / (1 << 20):8.2f} MiB"


def main():
    print(f"soak: Envoy {ENVOY_VERSION} --concurrency 2, {THREADS} client threads, {SECONDS:.0f} s, "
          f"token pool of {POOL} rotated every {ROTATE_SECONDS:g} s, memory margin {MEMORY_MARGIN:.0%}",
          flush=True)
    pool = TokenPool()
    upstream = ListUpstream()
    envoy = Envoy(ENVOY_VERSION, CONFIG, upstream.port, concurrency=2)
    stats = Stats()
    samples = []
    stop = threading.Event()
    try:
        envoy.start()
        started = time.time()
        deadline = started + SECONDS

        def sample(label):
            m = memory(envoy)
            with stats.lock:
                total = sum(stats.by_kind.values())
            samples.append((label, time.time() - started, total, m))
            print(f"  [{time.time() - started:6.0f} s] {label:>8}: allocated {mib(m['allocated'])}, "
                  f"heap {mib(m['heap_size'])}, rss {mib(m['rss'])}, requests so far {total}", flush=True)

        sample("start")

        def rotator():
            while not stop.wait(ROTATE_SECONDS):
                pool.rotate()

        threading.Thread(target=rotator, daemon=True).start()
        clients = [threading.Thread(target=client, args=(envoy.port, pool, stats, deadline, i), daemon=True)
                   for i in range(THREADS)]
        for t in clients:
            t.start()
        minute = 1
        while time.time() < deadline:
            next_sample = started + minute * SAMPLE_EVERY
            if next_sample >= deadline:
                time.sleep(max(0.0, deadline - time.time()))
                break
            time.sleep(max(0.0, next_sample - time.time()))
            sample(f"{minute} min")
            minute += 1
        for t in clients:
            t.join(30)
        stop.set()
        sample("end")
        elapsed = time.time() - started
        wasm_end = samples[-1][3]["wasm"]
        if envoy.proc.poll() is not None:
            stats.error(f"envoy exited: code {envoy.proc.returncode}")
    finally:
        stop.set()
        envoy.stop()
        upstream.close()

    total = sum(stats.by_kind.values())
    errors = sum(stats.errors.values())
    # The baseline is the sample after the first minute (warm caches, pools
    # and VMs); with a run shorter than that, the start.
    baseline_index = 1 if len(samples) > 2 else 0
    baseline_label = samples[baseline_index][0]

    def series(name):
        values = [m[name] for _, _, _, m in samples]
        base = values[baseline_index]
        growth = (values[-1] - base) / base if base else 0.0
        return values, base, growth

    allocated, _, growth = series("allocated")
    rss_values, _, rss_growth = series("rss")

    print("\n== soak report")
    print(f"duration          {elapsed:.0f} s")
    print(f"requests          {total} ({total / elapsed:.0f}/s), reconnects after close {stats.reconnects}")
    print(f"tokens minted     {pool.minted}")
    for kind, status, _ in KINDS:
        print(f"  {kind:<16}{stats.by_kind[kind]:>9}  (expect {status})")
    print("statuses          " + ", ".join(f"{s}: {n}" for s, n in sorted(stats.by_status.items())))
    print(f"unexpected        {errors}" + (f"  {dict(stats.errors)}" if errors else ""))
    for example in stats.examples:
        print(f"  e.g. {example}")
    for name, values, change in (("allocated", allocated, growth), ("rss", rss_values, rss_growth)):
        print(f"memory {name:<10} start {mib(values[0])}, after {baseline_label} {mib(values[baseline_index])}, "
              f"end {mib(values[-1])}, peak {mib(max(values))}; {change:+.1%} from {baseline_label} to end "
              f"(limit +{MEMORY_MARGIN:.0%})")
    print(f"memory heap_size  start {mib(samples[0][3]['heap_size'])}, end {mib(samples[-1][3]['heap_size'])}, "
          f"peak {mib(max(m['heap_size'] for _, _, _, m in samples))}")
    interesting = {k: v for k, v in wasm_end.items() if v}
    if interesting:
        print("wasm stats (end)  " + ", ".join(f"{k}={v}" for k, v in sorted(interesting.items())))
    failed = []
    if errors:
        failed.append(f"{errors} unexpected answers or connection errors")
    if growth > MEMORY_MARGIN:
        failed.append(f"allocated memory grew {growth:.1%} (> {MEMORY_MARGIN:.0%})")
    if rss_growth > MEMORY_MARGIN:
        failed.append(f"resident memory grew {rss_growth:.1%} (> {MEMORY_MARGIN:.0%})")
    if total == 0:
        failed.append("no requests were answered")
    if failed:
        print("SOAK FAILED: " + "; ".join(failed))
        return 1
    print("SOAK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
