"""Signature verification inside Envoy's V8: the filter's code against the
libraries it could use instead, one verification at a time.

Builds bench/verify (a proxy-wasm module compiling the filter's
src/keys/jwks.rs and src/signature.rs with the candidate libraries), mints one
key and token per algorithm, starts Envoy with the module as a singleton
bootstrap service and prints, per algorithm and candidate, microseconds per
verification (the lowest and the median of the timed batches), then stops
Envoy.

    .venvs/test/bin/python bench/verify.py [--iterations N] [--batches B] [--json FILE] [--ring]

Envoy 1.40.0 from .venvs (make setup-envoy). The figures are wall time on
the host clock inside one V8 call; the lowest batch is the one other load on
the machine disturbed least.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402

WASM = BENCH / "verify/target/wasm32-wasip1/release/verify_bench.wasm"


def b64u(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def cases():
    claims = {"iss": "https://idp.bench.local", "aud": "https://mcp.bench.local/mcp",
              "sub": "alice", "exp": int(time.time()) + 86400 * 365, "scope": "mcp:read"}
    out = []
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = rsa_key.public_key().public_numbers()
    rsa_jwk = {"kty": "RSA", "kid": "rsa", "n": b64u(n.n.to_bytes(256, "big")), "e": "AQAB"}
    for alg in ("RS256", "PS256"):
        out.append({"alg": alg, "kid": "rsa", "jwk": rsa_jwk,
                    "token": jwt.encode(claims, rsa_key, algorithm=alg, headers={"kid": "rsa"})})
    for alg, curve, crv, size in (("ES256", ec.SECP256R1(), "P-256", 32),
                                  ("ES384", ec.SECP384R1(), "P-384", 48)):
        key = ec.generate_private_key(curve)
        nums = key.public_key().public_numbers()
        jwk = {"kty": "EC", "kid": "ec", "crv": crv,
               "x": b64u(nums.x.to_bytes(size, "big")), "y": b64u(nums.y.to_bytes(size, "big"))}
        out.append({"alg": alg, "kid": "ec", "jwk": jwk,
                    "token": jwt.encode(claims, key, algorithm=alg, headers={"kid": "ec"})})
    ed = ed25519.Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization
    x = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    out.append({"alg": "EdDSA", "kid": "ed", "jwk": {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64u(x)},
                "token": jwt.encode(claims, ed, algorithm="EdDSA", headers={"kid": "ed"})})
    return out


def build(with_ring):
    cmd = ["cargo", "build", "--release", "--target", "wasm32-wasip1", "--quiet"]
    env = dict(os.environ)
    if with_ring:
        # ring's C parts, for wasm32: Debian's clang-19 and wasi-libc headers.
        cmd += ["--features", "ring"]
        env.update(CC_wasm32_wasip1="clang-19", AR_wasm32_wasip1="llvm-ar-19",
                   CFLAGS_wasm32_wasip1="-I/usr/include/wasm32-wasi")
    subprocess.run(cmd, cwd=BENCH / "verify", env=env, check=True)


def run(config, version="1.40.0", timeout=600):
    bootstrap = {
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
                "singleton": True,
                "config": {
                    "name": "verify_bench",
                    "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                                  "code": {"local": {"filename": str(WASM)}}},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": json.dumps(config)},
                },
            },
        }],
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": harness.free_port()}}},
    }
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        path = Path(tmp) / "envoy.json"
        path.write_text(json.dumps(bootstrap))
        log = Path(tmp) / "envoy.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([harness.envoy_binary(version), "-c", str(path), "--concurrency", "1",
                                     "--log-level", "warning", "--base-id", str(os.getpid() % 60000)],
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                text = log.read_text()
                if "DONE" in text or "FAILED" in text or proc.poll() is not None:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("the benchmark did not finish in time")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        text = log.read_text()
    if "DONE" not in text:
        raise SystemExit("the benchmark failed:\n" + text[-3000:])
    # Envoy may configure the service's VM a second time; the first run is
    # complete at its DONE line.
    first = text[:text.index("DONE")]
    return [json.loads(line.split("RESULT ", 1)[1]) for line in first.splitlines() if "RESULT " in line]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=20, help="verifications per timed batch")
    p.add_argument("--batches", type=int, default=9)
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--ring", action="store_true",
                   help="also time ring 0.17 (needs Debian's clang-19 and wasi-libc)")
    args = p.parse_args()
    build(args.ring)
    results = run({"iterations": args.iterations, "batches": args.batches, "cases": cases()})
    print(f"load average: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| case | candidate | lowest batch (µs per verification) | median batch (µs) |")
    print("| --- | --- | ---: | ---: |")
    for r in results:
        if "error" in r:
            print(f"| {r['case']} | {r['candidate']} | {r['error']} | |")
        else:
            print(f"| {r['case']} | {r['candidate']} | {r['min_us']:,.0f} | {r['median_us']:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
