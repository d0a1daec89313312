"""A real MCP server (the official Python SDK, `mcp` 2.x) as the upstream of
the end-to-end tests, with a recorder in front of it.

Run as a script it serves streamable HTTP at `/mcp` on 127.0.0.1:<port>:

    python mcp_upstream.py --port P --record FILE [--json-response] [--stateless] [--event-store] [--conditions]

- `--json-response`: answers are `application/json`; without it the SDK
  answers handshake-era (2025-xx) requests with `text/event-stream`, and
  2026-07-28 requests with SSE as soon as a handler emits a notification
  (`search` reports progress when the request carries a `progressToken`).
- `--stateless`: handshake-era requests need no session (no `initialize`,
  no `Mcp-Session-Id`); without it they run in sessions.
- `--event-store`: resumability: every event is kept in memory, and a `GET`
  with `Last-Event-ID` replays the rest of that event's stream.
- `--conditions`: three more tools for the argument-level rules
  (README "Conditions"): `transfer(amount, to)`, `query(tenant, sql)`, and
  `get_forecast(region, days)` whose `region` is mirrored into an
  `Mcp-Param-Region` header (`x-mcp-header`).
- 2026-07-28 requests (a `MCP-Protocol-Version: 2026-07-28` header) are
  served statelessly by the SDK in every mode.

Every HTTP request that reaches the server is appended to FILE as one JSON
line *before* the SDK sees it: the HTTP method and path, each JSON-RPC
message's method / name (`params.name`, or `params.uri` for
`resources/read`) / id as Python's parser reads them, the identity headers,
whether an `Authorization` header arrived, and the raw body. The tests use it
to prove what reached (and what never reached) the server behind Envoy.

In the tests, `McpUpstream` (a `harness.ManagedProcess`) starts the script
as a subprocess on a free port and waits until the port answers.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

from harness import ManagedProcess, free_port

HERE = Path(__file__).resolve().parent

# Headers the recorder keeps (lower-case).
RECORDED_HEADERS = ("x-mcp-subject", "x-mcp-roles", "x-mcp-client-id", "x-mcp-scopes",
                    "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "mcp-param-region",
                    "content-type", "accept")


# ---------------------------------------------------------------------------
# The server (runs in the subprocess)

def build_server(conditions=False):
    from mcp.server.mcpserver import Context, MCPServer

    server = MCPServer("mcp-authz-e2e", version="1.0.0")

    @server.tool()
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Weather in {city}: sunny, 21 C"

    @server.tool()
    async def search(query: str, ctx: Context) -> str:
        """Searches the documents; reports progress when asked to."""
        await ctx.report_progress(50, 100, "half way")
        return f"3 results for {query}"

    @server.tool()
    def set_config(key: str, value: str) -> str:
        """Sets a configuration value."""
        return f"config {key} set to {value}"

    @server.tool()
    def delete_everything() -> str:
        """Deletes everything."""
        return "everything deleted"

    @server.prompt()
    def summary(text: str = "the document") -> str:
        """Summarise a text."""
        return f"Please summarise {text}."

    @server.prompt()
    def admin_prompt() -> str:
        """An administrator's prompt."""
        return "You are the administrator."

    @server.resource("docs://readme", mime_type="text/plain")
    def readme() -> str:
        """The README."""
        return "README: how to use this server"

    @server.resource("secret://keys", mime_type="text/plain")
    def secret_keys() -> str:
        """Keys nobody should read."""
        return "TOP SECRET KEYS"

    if conditions:
        add_condition_tools(server)
    return server


def add_condition_tools(server):
    from typing import Annotated

    from pydantic import Field

    @server.tool()
    def transfer(amount: int, to: str) -> str:
        """Moves money."""
        return f"transferred {amount} to {to}"

    @server.tool()
    def query(tenant: str, sql: str) -> str:
        """Runs a query in one tenant's database."""
        return f"rows of {tenant} for {sql}"

    @server.tool()
    def get_forecast(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
                     days: int = 3) -> str:
        """The forecast of a region; the region travels in an Mcp-Param-Region header too."""
        return f"forecast for {region}: {days} days of sun"


def describe(message):
    """The method, name and id of one JSON-RPC message, as Python reads it."""
    if not isinstance(message, dict):
        return {"method": None, "name": None, "id": None}
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    method = message.get("method")
    field = "uri" if method == "resources/read" else "name"
    return {"method": method, "name": params.get(field), "id": message.get("id")}


class Recorder:
    """ASGI middleware: records each HTTP request, then hands it on with its
    body replayed unchanged."""

    def __init__(self, app, path):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        header_list = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        messages = parsed if isinstance(parsed, list) else ([parsed] if parsed is not None else [])
        record = {
            "http_method": scope["method"],
            "path": scope["path"],
            "rpc": [describe(m) for m in messages],
            "batch": isinstance(parsed, list),
            "headers": {h: [v for k, v in header_list if k == h] for h in RECORDED_HEADERS},
            "authorization": any(k == "authorization" for k, _ in header_list),
            "body": body.decode("utf-8", errors="replace"),
        }
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def memory_event_store():
    """The SDK's resumability interface over a list in memory: every event
    of every stream, replayable after any event id (what `GET` with
    `Last-Event-ID` asks for)."""
    from mcp.server.streamable_http import EventMessage, EventStore

    class MemoryEventStore(EventStore):
        def __init__(self):
            self.events = []  # (event id, stream id, message or None)

        async def store_event(self, stream_id, message):
            event_id = f"ev-{len(self.events) + 1}"
            self.events.append((event_id, stream_id, message))
            return event_id

        async def replay_events_after(self, last_event_id, send_callback):
            found = [i for i, (eid, _, _) in enumerate(self.events) if eid == last_event_id]
            if not found:
                return None
            stream_id = self.events[found[0]][1]
            for event_id, sid, message in self.events[found[0] + 1:]:
                if sid == stream_id and message is not None:
                    await send_callback(EventMessage(message, event_id))
            return stream_id

    return MemoryEventStore()


def serve(port, record, json_response, stateless, event_store=False, conditions=False):
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    app = build_server(conditions).streamable_http_app(
        streamable_http_path="/mcp",
        json_response=json_response,
        stateless_http=stateless,
        event_store=memory_event_store() if event_store else None,
        # Behind Envoy the Host header is whatever the client sent.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    uvicorn.run(Recorder(app, record), host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------------------
# The handle the tests hold

class McpUpstream(ManagedProcess):
    """The SDK server in a subprocess. Use as a context manager."""

    label = "MCP server"
    cwd = str(HERE)

    def __init__(self, json_response=False, stateless=False, event_store=False, conditions=False):
        self.conditions = conditions
        self.json_response = json_response
        self.stateless = stateless
        self.event_store = event_store
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mcp-authz-upstream-")
        self.record_path = os.path.join(self.dir, "requests.jsonl")
        self.log_path = os.path.join(self.dir, "server.log")
        Path(self.record_path).touch()

    def command(self):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
               "--record", self.record_path]
        if self.json_response:
            cmd.append("--json-response")
        if self.stateless:
            cmd.append("--stateless")
        if self.event_store:
            cmd.append("--event-store")
        if self.conditions:
            cmd.append("--conditions")
        return cmd

    def ready(self):
        """The port accepts connections."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def clear(self):
        """Forgets what was recorded so far."""
        with open(self.record_path, "w"):
            pass

    def seen(self):
        """Every request recorded since the last `clear`, in arrival order."""
        with open(self.record_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def calls(self):
        """(method, name) of every JSON-RPC message recorded."""
        return [(m["method"], m["name"]) for r in self.seen() for m in r["rpc"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True, help="file the requests are appended to (JSON lines)")
    parser.add_argument("--json-response", action="store_true", help="answer application/json instead of SSE")
    parser.add_argument("--stateless", action="store_true", help="no sessions for handshake-era requests")
    parser.add_argument("--event-store", action="store_true",
                        help="keep every event in memory, so GET with Last-Event-ID replays them")
    parser.add_argument("--conditions", action="store_true",
                        help="add the tools of the argument-level rules (transfer, query, get_forecast)")
    args = parser.parse_args()
    serve(args.port, args.record, args.json_response, args.stateless, args.event_store, args.conditions)


if __name__ == "__main__":
    main()
