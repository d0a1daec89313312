"""The pieces of the interop tests that nobody here wrote, started on
127.0.0.1 and always torn down:

- `AuthorizationServer`: npm `oidc-provider` (`authorization_server.mjs`);
- Envoy with the filter in front of the official Python SDK's MCP server
  (`tests/mcp_upstream.py`; more clusters and routes for several servers),
  the JWKS fetched from the authorization server through an Envoy cluster,
  its URL discovered from the issuer;
- `run_client`: one SDK client script as a subprocess, its report parsed;
- `Matrix`: the compatibility matrix the test run writes to COMPATIBILITY.md.
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from configs import SCOPES, TOOL_RULES
from harness import ROOT, Envoy, ManagedProcess, bootstrap, cluster

HERE = Path(__file__).resolve().parent
NODE = os.environ.get("NODE", "node")
PY1 = ROOT / ".venvs" / "mcp1" / "bin" / "python"


def plugin_config(resource, issuer):
    """The filter's configuration: a Keycloak-like realm at `issuer`, the
    JWKS URL left out so that it is discovered from the issuer."""
    return {
        "resource": resource,
        "authorization_servers": [issuer],
        "scopes_supported": SCOPES,
        "resource_name": "mcp-authz interop test server",
        "providers": [{
            "issuer": issuer,
            "jwks": {"remote": {"cluster": "idp", "timeout_ms": 2000}},
            "algorithms": ["RS256"],
            "roles_claims": ["realm_access.roles"],
        }],
        "rules": TOOL_RULES,
        "identity_headers": {"x-mcp-subject": "sub", "x-mcp-client-id": "client_id",
                             "x-mcp-roles": "$roles", "x-mcp-scopes": "$scopes"},
    }


def http_get_json(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class AuthorizationServer(ManagedProcess):
    """`authorization_server.mjs` (npm oidc-provider) as a subprocess."""

    label = "the authorization server"
    cwd = str(HERE)
    not_yet = (Exception,)  # anything short of the discovery document means "not yet"

    def __init__(self, port, resources):
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.resources = list(resources)
        self.dir = tempfile.mkdtemp(prefix="mcp-authz-as-")
        self.events_path = os.path.join(self.dir, "events.jsonl")
        self.log_path = os.path.join(self.dir, "as.log")
        Path(self.events_path).touch()

    def command(self):
        cmd = [NODE, str(HERE / "authorization_server.mjs"), "--port", str(self.port),
               "--events", self.events_path]
        for r in self.resources:
            cmd += ["--resource", r]
        return cmd

    def ready(self):
        """The server answers discovery for its issuer."""
        return http_get_json(self.issuer + "/.well-known/openid-configuration")["issuer"] == self.issuer

    def events(self):
        with open(self.events_path) as f:
            return [json.loads(line) for line in f if line.strip()]


class InteropEnvoy(Envoy):
    """The harness's Envoy on a port chosen beforehand: the authorization
    server must know the resource URI (which holds Envoy's port) before
    Envoy's configuration can name the authorization server."""

    def __init__(self, version, port, plugin, upstream_port, idp_port, clusters=(), routes=()):
        clusters = [cluster("idp", idp_port), *clusters]
        super().__init__(version, plugin, upstream_port, clusters)
        self.port = port
        with open(self.config_path, "w") as f:
            json.dump(bootstrap(port, self.admin_port, plugin, upstream_port, clusters, routes=routes), f)

    def start(self, timeout=30):
        super().start(timeout)
        # Remote keys: requests are answered 503 until the first fetch
        # (discovery, then the JWKS) has succeeded.
        try:
            self.wait_for(lambda: self.stats().get("wasmcustom.mcp_authz.jwks_fetch.ok", 0) >= 1, timeout,
                          "fetch the JWKS", not_yet=(Exception,))
        except Exception:
            logs = self.logs()
            self.stop()
            raise RuntimeError("JWKS never fetched:\n" + logs[-4000:])
        return self


class ClientFailed(Exception):
    pass


def run_client(kind, url, scenarios, timeout=180):
    """Runs one SDK client script on a list of scenarios; returns its report
    (a dict: scenario name -> what the client did and saw)."""
    spec = json.dumps({"url": url, "scenarios": scenarios})
    if kind == "python-sdk-2":
        cmd = [sys.executable, str(HERE / "client_python_sdk2.py")]
    elif kind == "python-sdk-1":
        cmd = [str(PY1), str(HERE / "client_python_sdk1.py")]
    elif kind == "typescript-sdk":
        cmd = [NODE, str(HERE / "client_typescript_sdk.mjs")]
    else:
        raise ValueError(kind)
    proc = subprocess.run(cmd, input=spec, capture_output=True, text=True, timeout=timeout, cwd=str(HERE))
    report = None
    for line in proc.stdout.splitlines():
        if line.startswith("REPORT "):
            report = json.loads(line[len("REPORT "):])
    if proc.returncode != 0 or report is None:
        raise ClientFailed(f"{kind} client exited with {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                           f"\n--- stderr\n{proc.stderr[-6000:]}")
    return report, proc.stderr


class Matrix:
    """client x protocol version x flow -> result per Envoy version, written
    as Markdown to COMPATIBILITY.md."""

    path = HERE / "COMPATIBILITY.md"

    def __init__(self):
        self.rows = {}
        self.notes = {}
        self.order = []

    def set(self, client, protocol, flow, envoy_version, result, note=None):
        key = (client, protocol, flow)
        if key not in self.rows:
            self.rows[key] = {}
            self.order.append(key)
        self.rows[key][envoy_version] = result
        if note:
            self.notes[key] = note

    def markdown(self, envoy_versions):
        """One row per client and protocol, one column per flow; a cell says
        "works" or "not supported" when all Envoy versions agree, else what
        each version gave. Notes are numbered under the table."""
        versions = client_versions()
        flows, clients, notes = [], [], []
        for client, protocol, flow in self.order:
            if flow not in flows:
                flows.append(flow)
            if (client, protocol) not in clients:
                clients.append((client, protocol))
        first_seen = [c for c, _ in clients]
        clients.sort(key=lambda c: (first_seen.index(c[0]), c[1] != "2026-07-28"))

        def cell(key):
            if key not in self.rows:
                return "—"
            results = [self.rows[key].get(v, "not run") for v in envoy_versions]
            text = results[0] if len(set(results)) == 1 else ", ".join(
                f"{r} ({v})" for r, v in zip(results, envoy_versions))
            note = self.notes.get(key)
            if note:
                if note not in notes:
                    notes.append(note)
                text += f" [{notes.index(note) + 1}]"
            return text

        lines = [
            "# Compatibility with real MCP clients and a real authorization server",
            "",
            "Written by `make test` (`tests/interop/test_sdk_clients.py`); do not edit by hand.",
            "",
            "Every client starts with no token and follows the discovery flow from the",
            "filter's 401 (`resource_metadata` -> protected resource metadata ->",
            "authorization server metadata -> dynamic client registration -> token",
            "request with `resource`). Authorization server: " + versions["oidc-provider"] + ",",
            "set up like a Keycloak realm (RS256 JWT access tokens for the resource, roles in",
            "`realm_access.roles`). MCP server: the official Python SDK's (" + versions["server"] + ").",
            "\"works\" means every assertion of the test held: allowed calls reached the",
            "server, refused ones did not, and the SDK surfaced the refusal. Envoy versions:",
            ", ".join(envoy_versions) + "; a cell that names no version holds for all of them.",
            "",
            "| client | protocol | " + " | ".join(flows) + " |",
            "| --- | --- | " + " | ".join("---" for _ in flows) + " |",
        ]
        for client, protocol in clients:
            lines.append(f"| {client} | {protocol} | " +
                         " | ".join(cell((client, protocol, flow)) for flow in flows) + " |")
        if notes:
            lines += [""] + [f"{i + 1}. {note}" for i, note in enumerate(notes)]
        if LIMITATIONS:
            lines += ["", "## What a client cannot do, and why", ""]
            lines += [f"- {client}: {text}" for client, text in LIMITATIONS]
        lines.append("")
        return "\n".join(lines)

    def complete(self, envoy_versions):
        return bool(self.rows) and all(set(envoy_versions) <= set(cells) for cells in self.rows.values())

    def write_if_complete(self, envoy_versions):
        if self.complete(envoy_versions):
            self.path.write_text(self.markdown(envoy_versions))
            return True
        return False


MATRIX = Matrix()
LIMITATIONS = []  # (client, text), printed at the end of the run and written to the matrix


def note_limitation(client, text):
    """Says what a client cannot do and why: printed now, and again in the
    run's summary."""
    if (client, text) not in LIMITATIONS:
        LIMITATIONS.append((client, text))
    print(f"\n[interop] {client} cannot do this: {text}")


_VERSIONS = {}


def client_versions():
    """How the matrix names each client, with the installed version."""
    if not _VERSIONS:
        from importlib.metadata import version

        def npm_version(package):
            return json.loads((HERE / "node_modules" / package / "package.json").read_text())["version"]
        mcp1 = subprocess.run([str(PY1), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
                              capture_output=True, text=True).stdout.strip() or "?"
        _VERSIONS.update({
            "python-sdk-2": f"Python SDK (`mcp` {version('mcp')})",
            "python-sdk-1": f"Python SDK 1.x (`mcp` {mcp1})",
            "typescript-sdk": f"TypeScript SDK (`@modelcontextprotocol/sdk` {npm_version('@modelcontextprotocol/sdk')})",
            "oidc-provider": f"npm `oidc-provider` {npm_version('oidc-provider')}",
            "server": f"`mcp` {version('mcp')}",
        })
    return _VERSIONS
