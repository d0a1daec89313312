"""Where the time from starting Envoy to its first answer goes, for one or
more builds of the filter.

Starts Envoy 1.40.0 (`--concurrency 1`) with the filter and an inline-keys
configuration, polls until the first answer, and splits the time with the
timestamps of Envoy's own log (`wasm` at debug level):

- Envoy before the filter: process start to the first VM ("Base Wasm created")
- V8 compiles and instantiates the module: to "Thread-Local Wasm created"
  (Envoy runs V8 with `--no-liftoff`: the optimizing compiler compiles every
  function before the VM runs)
- the filter's configuration (parsing, keys, rules compiled): to the
  filter's "configured" log line
- the rest: the other VMs (one per worker, cloned from the compiled module,
  each configured again), listeners, and the first request

    .venvs/test/bin/python bench/startup.py [--starts N] [WASM ...]

Without WASM arguments the current release build is measured.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
import tokens  # noqa: E402
from configs import ISSUER, base_config  # noqa: E402

STAMP = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\.(\d{6})\]")
MARKS = {
    "vm": "Base Wasm created",
    "compiled": "Thread-Local Wasm created",
    "configured": "mcp_authz: configured",
}


def seconds(line):
    m = STAMP.match(line)
    if not m:
        return None
    h, mi, s, us = (int(x) for x in m.groups())
    return h * 3600 + mi * 60 + s + us / 1e6


def one_start(wasm, key, workdir):
    port, admin = harness.free_port(), harness.free_port()
    config = base_config([{"issuer": ISSUER, "jwks": {"inline": tokens.jwks(key)}}],
                         [{"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]}],
                         public_paths=["/healthz"])
    bootstrap = harness.bootstrap(port, admin, None, harness.free_port(),
                                  filters=[harness.wasm_filter(config, wasm)])
    path = Path(workdir) / "envoy.json"
    path.write_text(json.dumps(bootstrap))
    log_path = Path(workdir) / "envoy.log"
    cmd = [harness.envoy_binary("1.40.0"), "-c", str(path), "--concurrency", "1",
           "--log-level", "info", "--component-log-level", "wasm:debug",
           "--log-format", "[%H:%M:%S.%f][%l][%n] %v", "--base-id", str(admin)]
    with open(log_path, "w") as log:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise SystemExit("Envoy exited:\n" + log_path.read_text()[-3000:])
                try:
                    status, _, _ = harness.request(port, "GET", "/healthz", timeout=1)
                    if status:
                        break
                except OSError:
                    pass
                time.sleep(0.002)
            t_answer = time.time()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    # Log timestamps are local wall-clock times of day.
    day = datetime.datetime.fromtimestamp(t0)
    midnight = day.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    marks = {}
    for line in log_path.read_text().splitlines():
        for name, text in MARKS.items():
            if name not in marks and text in line:
                marks[name] = seconds(line) + midnight
    missing = set(MARKS) - set(marks)
    if missing:
        raise SystemExit(f"log lines not found: {missing}")
    return {
        "envoy before the filter": marks["vm"] - t0,
        "V8 compiles and instantiates the module": marks["compiled"] - marks["vm"],
        "the filter's configuration": marks["configured"] - marks["compiled"],
        "worker VMs, listeners, first answer": t_answer - marks["configured"],
        "total": t_answer - t0,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--starts", type=int, default=5, help="starts per build (alternating)")
    p.add_argument("wasm", nargs="*", default=[str(harness.WASM)])
    args = p.parse_args()
    key = tokens.RsaKey("startup")
    results = {w: [] for w in args.wasm}
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        for _ in range(args.starts):
            for w in args.wasm:
                results[w].append(one_start(w, key, tmp))
    print(f"load average: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.starts} starts per build, median (ms)")
    phases = list(results[args.wasm[0]][0])
    print("| phase | " + " | ".join(f"{Path(w).name} ({os.path.getsize(w):,} bytes)" for w in args.wasm) + " |")
    print("| --- |" + " ---: |" * len(args.wasm))
    for phase in phases:
        cells = [f"{statistics.median(r[phase] for r in results[w]) * 1000:.0f}" for w in args.wasm]
        print(f"| {phase} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
