"""Which parts of the filter V8 compiles at every start, by code size.

Envoy runs V8 with `--no-liftoff`: the optimizing compiler compiles every
function of the module before the first VM runs, so the time from starting
Envoy to its first answer grows with the code (bench/startup.py measures the
phases). This script builds the release `.wasm` with its name section kept
(the shipped build strips it; the code is the same), reads each function's
body size and groups the functions by crate, and the filter's own functions
by module:

    .venvs/test/bin/python bench/code_share.py [--top N]

Generic functions of the standard library instantiated for the filter's
types count under `core`/`alloc`. The figure is bytes of Wasm function
bodies; V8's compile time follows it closely (RESULTS.md "Startup").
"""

import argparse
import collections
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target" / "code-share"


def leb128(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def sections(data):
    if data[:4] != b"\0asm":
        raise SystemExit("not a Wasm module")
    i = 8
    while i < len(data):
        kind = data[i]
        size, i = leb128(data, i + 1)
        yield kind, data[i:i + size]
        i += size


def function_names(payload):
    """The name section's function names (subsection 1), by function index."""
    length, i = leb128(payload, 0)
    if payload[i:i + length] != b"name":
        return {}
    i += length
    names = {}
    while i < len(payload):
        sub = payload[i]
        size, i = leb128(payload, i + 1)
        if sub == 1:
            count, j = leb128(payload, i)
            for _ in range(count):
                index, j = leb128(payload, j)
                n, j = leb128(payload, j)
                names[index] = payload[j:j + n].decode("utf-8", "replace")
                j += n
        i += size
    return names


def imported_functions(payload):
    count, i = leb128(payload, 0)
    functions = 0
    for _ in range(count):
        for _ in range(2):  # module and field names
            n, i = leb128(payload, i)
            i += n
        kind = payload[i]
        i += 1
        if kind != 0:
            raise SystemExit("only function imports are expected")
        _, i = leb128(payload, i)
        functions += 1
    return functions


def body_sizes(payload):
    count, i = leb128(payload, 0)
    sizes = []
    for _ in range(count):
        size, i = leb128(payload, i)
        sizes.append(size)
        i += size
    return sizes


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:len(names)]


def owner(name):
    """The crate a function belongs to; the module for the filter's own."""
    bare = name.lstrip("<")
    own = re.match(r"mcp_authz::([a-z_0-9]+)", bare)
    if own:
        return f"mcp_authz::{own[1]}"
    crate = re.match(r"([a-z_0-9]+)(?:\[[0-9a-f]+\])?::", bare)
    return crate[1] if crate else "(trait impls on generic types, exports, runtime)"


def build():
    env = dict(os.environ, CARGO_PROFILE_RELEASE_STRIP="false", CARGO_TARGET_DIR=str(TARGET))
    subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip1"], cwd=ROOT, env=env, check=True)
    return TARGET / "wasm32-wasip1" / "release" / "mcp_authz.wasm"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--top", type=int, default=25, help="rows to print")
    p.add_argument("--wasm", help="a build with its name section (default: build one)")
    args = p.parse_args()
    data = Path(args.wasm).read_bytes() if args.wasm else build().read_bytes()
    imports, names, sizes = 0, {}, []
    for kind, payload in sections(data):
        if kind == 2:
            imports = imported_functions(payload)
        elif kind == 10:
            sizes = body_sizes(payload)
        elif kind == 0:
            names.update(function_names(payload))
    if not names:
        raise SystemExit("the module has no name section")
    readable = demangle([names.get(imports + k, "?") for k in range(len(sizes))])
    share = collections.Counter()
    for size, name in zip(sizes, readable):
        share[owner(name)] += size
    total = sum(sizes)
    print(f"{len(sizes)} functions, {total:,} bytes of function bodies")
    print("| part | bytes | share |")
    print("| --- | ---: | ---: |")
    for part, size in share.most_common(args.top):
        print(f"| {part} | {size:,} | {100 * size / total:.1f} % |")
    rest = total - sum(s for _, s in share.most_common(args.top))
    print(f"| the rest | {rest:,} | {100 * rest / total:.1f} % |")


if __name__ == "__main__":
    sys.exit(main())
