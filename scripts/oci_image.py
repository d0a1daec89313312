"""Packages the built filter as an OCI image istio-agent pulls (envoy/istio/):
the Wasm OCI artifact layout (config `application/vnd.wasm.config.v1+json`,
one layer `application/vnd.wasm.content.layer.v1+wasm`), written as an OCI
image layout directory and a tar of it. No timestamps go in, so the same
.wasm always gives the same digest.

Usage: oci_image.py WASM OUT_DIR [TAG]   (prints the manifest digest)
Push with e.g. `skopeo copy oci:OUT_DIR:TAG docker://registry.example.com/mcp-authz:TAG`."""

import hashlib
import json
import os
import sys
import tarfile

WASM_CONFIG = "application/vnd.wasm.config.v1+json"
WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob(out, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest.split(":")[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": digest, "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build(wasm_path, out, tag="latest"):
    with open(wasm_path, "rb") as f:
        wasm = f.read()
    os.makedirs(out, exist_ok=True)
    layer = {"mediaType": WASM_LAYER, **blob(out, wasm),
             "annotations": {"org.opencontainers.image.title": "mcp_authz.wasm"}}
    config = {"mediaType": WASM_CONFIG, **blob(out, canonical({
        "created": "1970-01-01T00:00:00Z", "author": "mcp-authz",
        "platform": {"os": "wasip1", "architecture": "wasm"}}))}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer],
                "annotations": {"org.opencontainers.image.title": "mcp-authz"}}
    manifest_desc = {"mediaType": MANIFEST, **blob(out, canonical(manifest)),
                     "annotations": {"org.opencontainers.image.ref.name": tag}}
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": [manifest_desc]}))
    with tarfile.open(out.rstrip("/") + ".tar", "w") as tar:
        for root, _, files in sorted(os.walk(out)):
            for name in sorted(files):
                full = os.path.join(root, name)
                info = tar.gettarinfo(full, os.path.relpath(full, out))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(full, "rb") as f:
                    tar.addfile(info, f)
    return manifest_desc["digest"]


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(build(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "latest"))
