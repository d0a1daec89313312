"""The OCI artifact `make oci` produces: the Wasm OCI layout Istio pulls;
and the `.wasm` it carries (the release build `make build` writes) stays
under 2 MiB."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

from harness import ROOT, WASM

sys.path.insert(0, str(ROOT / "scripts"))
import oci_image  # noqa: E402


def read_blob(out, digest):
    with open(os.path.join(out, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
        data = f.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, "blob content matches its digest"
    return data


MAX_WASM_BYTES = 2 * 1024 * 1024


def test_the_wasm_stays_under_2_mib():
    size = WASM.stat().st_size
    assert size < MAX_WASM_BYTES, f"{WASM} is {size} bytes, over 2 MiB ({MAX_WASM_BYTES})"


def test_oci_layout_holds_the_wasm_as_its_only_layer(tmp_path):
    out = str(tmp_path / "image")
    digest = oci_image.build(str(WASM), out, "0.1.0")
    assert json.load(open(os.path.join(out, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    index = json.load(open(os.path.join(out, "index.json")))
    [desc] = index["manifests"]
    assert desc["digest"] == digest
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    manifest = json.loads(read_blob(out, digest))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v1+json"
    read_blob(out, manifest["config"]["digest"])
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.wasm.content.layer.v1+wasm"
    assert read_blob(out, layer["digest"]) == WASM.read_bytes()
    assert layer["size"] == WASM.stat().st_size
    assert os.path.exists(out + ".tar")


def test_same_wasm_gives_same_digest(tmp_path):
    a = oci_image.build(str(WASM), str(tmp_path / "a"))
    b = oci_image.build(str(WASM), str(tmp_path / "b"))
    assert a == b


def test_skopeo_reads_the_image(tmp_path):
    """A real OCI tool (Debian's skopeo, installed by `make setup-debian`)
    reads the layout back."""
    skopeo = shutil.which("skopeo")
    assert skopeo, "skopeo is installed by `make test` (setup-debian)"
    out = str(tmp_path / "image")
    digest = oci_image.build(str(WASM), out, "0.1.0")
    raw = subprocess.run([skopeo, "inspect", "--raw", f"oci:{out}:0.1.0"], capture_output=True, text=True,
                         timeout=60)
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == digest
