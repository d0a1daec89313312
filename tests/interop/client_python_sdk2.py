"""An MCP client built on the official Python SDK 2.x (`mcp` 2.x, the
`.venvs/test` virtualenv), driven by the interop tests.

Reads a JSON spec on stdin:

    {"url": "http://127.0.0.1:P/mcp",
     "scenarios": [{"name": ..., "flow": "authorization_code" | "client_credentials",
                    "mode": "auto" | "legacy",
                    "account": "alice", "consents": ["mcp:read", null],
                    "client_id": ..., "client_secret": ...,
                    "calls": [["get_weather", {"city": "Paris"}], ...]}]}

For each scenario it starts with no token and lets the SDK's OAuth provider
(`mcp.client.auth.OAuthClientProvider`, or the SDK's
`ClientCredentialsOAuthProvider`) run the whole flow from the server's 401.
The authorization-code flow's "browser" is headless: it fetches the
authorization URL, follows the redirects through the authorization server's
auto-completing login and consent pages (naming the account and the scopes
the user approves on the n-th authorization), and hands the `code`, `state`
and `iss` of the redirect to the callback URL back to the SDK.

It then lists the tools, calls each tool of `calls` in order, and lists the
tools again. It prints one line `REPORT <json>`: per scenario, every HTTP
exchange the SDK made (method, URL, status, WWW-Authenticate), every
browser hop, the tokens the SDK stored (scope only; never the token), the
tool lists and each call's result or error as the SDK surfaced it.

What does not depend on the SDK's version (the headless browser, the token
storage, the OAuth provider, the report) is in `oauth_helpers.py`, shared
with `client_python_sdk1.py` and `scripts/demo_client.py`.
"""

import anyio
import httpx2

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult

from oauth_helpers import (HeadlessBrowser, describe_error, exchange, fatal, new_report, oauth_provider, run_spec,
                           tool_result)


async def run_scenario(url, scenario):
    report = new_report(scenario["name"])

    async def on_response(response):
        report["http"].append(exchange(response))

    try:
        browser = HeadlessBrowser(scenario, report, httpx2, AuthorizationCodeResult)
        auth = oauth_provider(url, scenario, report, "mcp-authz interop (python sdk 2)", browser)
        async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30, read=60),
                                      event_hooks={"response": [on_response]}) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=scenario.get("mode", "auto")) as client:
                report["protocol_version"] = client.protocol_version
                await list_tools(client, report)
                for name, arguments in scenario.get("calls", []):
                    step = {"step": "call", "tool": name}
                    try:
                        result = await client.call_tool(name, arguments)
                        step.update(ok=True, result=tool_result(result.content, result.is_error))
                    except Exception as exc:  # noqa: BLE001 - the SDK's error is what we report
                        step.update(ok=False, error=describe_error(exc))
                    report["steps"].append(step)
                await list_tools(client, report)
    except BaseException as exc:  # noqa: BLE001
        report["fatal"] = fatal(exc)
    return report


async def list_tools(client, report):
    step = {"step": "list_tools"}
    try:
        result = await client.list_tools()
        step.update(ok=True, tools=sorted(t.name for t in result.tools))
    except Exception as exc:  # noqa: BLE001
        step.update(ok=False, error=describe_error(exc))
    report["steps"].append(step)


if __name__ == "__main__":
    anyio.run(run_spec, run_scenario)
