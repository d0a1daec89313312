"""An MCP client built on the official Python SDK 1.x (`mcp<2`, the
`.venvs/mcp1` virtualenv: `make setup-py1`), driven by the interop tests. It
is `client_python_sdk2.py` written against the 1.x API (`httpx`,
`ClientSession`, a callback handler returning `(code, state)`); the 1.x line
speaks protocol 2025-11-25 (initialize handshake, sessions).

Reads a JSON spec on stdin:

    {"url": "http://127.0.0.1:P/mcp",
     "scenarios": [{"name": ..., "flow": "authorization_code" | "client_credentials",
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
tools again, each in its own MCP session (initialize first): the 1.x
transport raises a refused request's HTTP status inside its task group,
which ends the connection. It prints one line `REPORT <json>`: per scenario, every HTTP
exchange the SDK made (method, URL, status, WWW-Authenticate), every
browser hop, the tokens the SDK stored (scope only; never the token), the
tool lists and each call's result or error as the SDK surfaced it.
"""

import json
import sys
import traceback
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import httpx

from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT_URI = "http://127.0.0.1:1/callback"  # never fetched: the browser stops at it


class MemoryStorage:
    def __init__(self, report):
        self.tokens = None
        self.client_info = None
        self.report = report

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens
        self.report["tokens"].append({"scope": tokens.scope, "refresh_token": tokens.refresh_token is not None})

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull):
        self.client_info = client_info
        self.report["registered_client_id"] = client_info.client_id


class HeadlessBrowser:
    """Plays the user agent of the authorization-code flow."""

    def __init__(self, scenario, report):
        self.account = scenario.get("account", "alice")
        self.consents = scenario.get("consents") or [None]
        self.report = report
        self.pending = None

    async def redirect_handler(self, authorization_url: str) -> None:
        n = len(self.report["authorizations"])
        consent = self.consents[min(n, len(self.consents) - 1)]
        query = parse_qs(urlparse(authorization_url).query)
        self.report["authorizations"].append({
            "scope": query.get("scope", [None])[0],
            "resource": query.get("resource", [None])[0],
            "code_challenge_method": query.get("code_challenge_method", [None])[0],
            "consent": consent,
        })
        headers = {"X-Test-Account": self.account}
        if consent is not None:
            headers["X-Test-Consent"] = consent
        url = authorization_url
        async with httpx.AsyncClient(follow_redirects=False, headers=headers, timeout=10) as browser:
            for _ in range(20):
                response = await browser.get(url)
                self.report["browser"].append([urlparse(url).path, response.status_code])
                location = response.headers.get("location")
                if response.status_code not in (301, 302, 303, 307, 308) or not location:
                    raise RuntimeError(f"the authorization server stopped at {url}: {response.status_code} {response.text[:300]}")
                url = urljoin(url, location)
                if url.startswith(REDIRECT_URI):
                    params = parse_qs(urlparse(url).query)
                    if "error" in params:
                        raise RuntimeError(f"authorization refused: {params}")
                    self.pending = (params["code"][0], params.get("state", [None])[0])
                    return
        raise RuntimeError("too many redirects")

    async def callback_handler(self) -> tuple[str, str | None]:
        result, self.pending = self.pending, None
        return result


def describe_error(exc):
    # A refused request (any HTTP error status) is raised by the 1.x transport
    # as httpx.HTTPStatusError inside its task group, which ends the
    # connection: dig it out of the exception group.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    out = {"type": type(exc).__name__, "message": str(exc)[:500]}
    error = getattr(exc, "error", None)
    if error is not None and hasattr(error, "code"):
        out["code"] = error.code
        out["message"] = error.message
    response = getattr(exc, "response", None)
    if response is not None:
        out["status"] = response.status_code
    return out


def tool_result(result):
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {"is_error": bool(result.isError), "text": " ".join(texts)}


async def run_scenario(url, scenario):
    report = {"name": scenario["name"], "http": [], "browser": [], "authorizations": [], "tokens": [],
              "steps": [], "protocol_version": None, "fatal": None, "connections": 0}

    async def on_response(response):
        report["http"].append({"method": response.request.method, "url": str(response.request.url),
                               "status": response.status_code,
                               "www_authenticate": response.headers.get("www-authenticate"),
                               "mcp_method": response.request.headers.get("mcp-method")})

    def make_provider():
        storage = MemoryStorage(report)
        if scenario["flow"] == "client_credentials":
            auth = ClientCredentialsOAuthProvider(
                server_url=url, storage=storage, client_id=scenario["client_id"],
                client_secret=scenario["client_secret"], issuer=scenario.get("issuer"))
        else:
            browser = HeadlessBrowser(scenario, report)
            auth = OAuthClientProvider(
                server_url=url,
                client_metadata=OAuthClientMetadata(
                    client_name="mcp-authz interop (python sdk 1)",
                    redirect_uris=[REDIRECT_URI],
                    grant_types=["authorization_code", "refresh_token"],
                    response_types=["code"],
                    token_endpoint_auth_method="none",
                ),
                storage=storage,
                redirect_handler=browser.redirect_handler,
                callback_handler=browser.callback_handler,
            )
        return auth

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
            return {"result": tool_result(await client.call_tool(name, arguments))}
        return action

    try:
        auth = make_provider()
        async with httpx.AsyncClient(auth=auth, timeout=httpx.Timeout(30, read=60),
                                     event_hooks={"response": [on_response]}) as http:
            await step(http, list_tools, {"step": "list_tools"})
            for name, arguments in scenario.get("calls", []):
                await step(http, call(name, arguments), {"step": "call", "tool": name})
            await step(http, list_tools, {"step": "list_tools"})
    except BaseException as exc:  # noqa: BLE001
        report["fatal"] = {"type": type(exc).__name__, "message": str(exc)[:2000],
                           "traceback": traceback.format_exc()[-4000:]}
    return report


async def main():
    spec = json.load(sys.stdin)
    reports = {}
    for scenario in spec["scenarios"]:
        reports[scenario["name"]] = await run_scenario(spec["url"], scenario)
    print("REPORT " + json.dumps(reports), flush=True)


if __name__ == "__main__":
    anyio.run(main)
