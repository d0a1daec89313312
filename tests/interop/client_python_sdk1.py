"""An MCP client built on the official Python SDK 1.x (`mcp<2`, the
`.venvs/mcp1` virtualenv: `make setup-py1`), driven by the interop tests. It
is `client_python_sdk2.py` written against the 1.x API (`httpx`,
`ClientSession`, a callback handler returning `(code, state)`); the 1.x line
speaks protocol 2025-11-25 (initialize handshake, sessions). What does not
depend on the SDK's version (the headless browser, the token storage, the
OAuth provider, the report) is in `oauth_helpers.py`.

It reads the same JSON spec on stdin as `client_python_sdk2.py` (a
scenario's `mode` aside) and runs each scenario the same way, from no token
through the SDK's OAuth provider and the headless browser, and prints the
same `REPORT <json>` line. One difference: it lists the tools, calls each
tool of `calls` in order and lists the tools again each in its own MCP
session (initialize first), counted in the report's `connections`: the 1.x
transport raises a refused request's HTTP status inside its task group,
which ends the connection.
"""

import anyio
import httpx

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from oauth_helpers import HeadlessBrowser, exchange, fatal, new_report, oauth_provider, run_spec, tool_result
from oauth_helpers import describe_error as describe_sdk_error


def describe_error(exc):
    # A refused request (any HTTP error status) is raised by the 1.x transport
    # as httpx.HTTPStatusError inside its task group, which ends the
    # connection: dig it out of the exception group.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    out = describe_sdk_error(exc)
    response = getattr(exc, "response", None)
    if response is not None:
        out["status"] = response.status_code
    return out


async def run_scenario(url, scenario):
    report = new_report(scenario["name"], connections=0)

    async def on_response(response):
        report["http"].append(exchange(response))

    async def step(http, action, record):
        """One MCP session (initialize, then `action`) per step: a refused
        request ends the 1.x transport, so each step gets its own
        connection. The OAuth provider, and so the tokens, are shared."""
        report["connections"] += 1
        try:
            async with streamable_http_client(url, http_client=http) as (read, write, _), \
                    ClientSession(read, write) as client:
                report["protocol_version"] = (await client.initialize()).protocolVersion
                record.update(ok=True, **await action(client))
        except BaseException as exc:  # noqa: BLE001 - the SDK's error is what we report
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            record.update(ok=False, error=describe_error(exc))
        report["steps"].append(record)

    async def list_tools(client):
        return {"tools": sorted(t.name for t in (await client.list_tools()).tools)}

    def call(name, arguments):
        async def action(client):
            result = await client.call_tool(name, arguments)
            return {"result": tool_result(result.content, result.isError)}
        return action

    try:
        # The 1.x callback handler returns (code, state).
        browser = HeadlessBrowser(scenario, report, httpx, lambda code, state, iss: (code, state))
        auth = oauth_provider(url, scenario, report, "mcp-authz interop (python sdk 1)", browser)
        async with httpx.AsyncClient(auth=auth, timeout=httpx.Timeout(30, read=60),
                                     event_hooks={"response": [on_response]}) as http:
            await step(http, list_tools, {"step": "list_tools"})
            for name, arguments in scenario.get("calls", []):
                await step(http, call(name, arguments), {"step": "call", "tool": name})
            await step(http, list_tools, {"step": "list_tools"})
    except BaseException as exc:  # noqa: BLE001
        report["fatal"] = fatal(exc)
    return report


if __name__ == "__main__":
    anyio.run(run_spec, run_scenario)
