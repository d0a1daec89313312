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
"""

import json
import sys
import traceback
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import httpx2

from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

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
        async with httpx2.AsyncClient(follow_redirects=False, headers=headers, timeout=10) as browser:
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
                    self.pending = AuthorizationCodeResult(
                        code=params["code"][0], state=params.get("state", [None])[0], iss=params.get("iss", [None])[0])
                    return
        raise RuntimeError("too many redirects")

    async def callback_handler(self) -> AuthorizationCodeResult:
        result, self.pending = self.pending, None
        return result


def describe_error(exc):
    out = {"type": type(exc).__name__, "message": str(exc)[:500]}
    error = getattr(exc, "error", None)
    if error is not None and hasattr(error, "code"):
        out["code"] = error.code
        out["message"] = error.message
    return out


def tool_result(result):
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {"is_error": bool(result.is_error), "text": " ".join(texts)}


async def run_scenario(url, scenario):
    report = {"name": scenario["name"], "http": [], "browser": [], "authorizations": [], "tokens": [],
              "steps": [], "protocol_version": None, "fatal": None}

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
                    client_name="mcp-authz interop (python sdk 2)",
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

    try:
        auth = make_provider()
        async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30, read=60),
                                      event_hooks={"response": [on_response]}) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=scenario.get("mode", "auto")) as client:
                report["protocol_version"] = client.protocol_version
                await list_tools(client, report)
                for name, arguments in scenario.get("calls", []):
                    step = {"step": "call", "tool": name}
                    try:
                        step.update(ok=True, result=tool_result(await client.call_tool(name, arguments)))
                    except Exception as exc:  # noqa: BLE001 - the SDK's error is what we report
                        step.update(ok=False, error=describe_error(exc))
                    report["steps"].append(step)
                await list_tools(client, report)
    except BaseException as exc:  # noqa: BLE001
        report["fatal"] = {"type": type(exc).__name__, "message": str(exc)[:2000],
                           "traceback": traceback.format_exc()[-4000:]}
    return report


async def list_tools(client, report):
    step = {"step": "list_tools"}
    try:
        result = await client.list_tools()
        step.update(ok=True, tools=sorted(t.name for t in result.tools))
    except Exception as exc:  # noqa: BLE001
        step.update(ok=False, error=describe_error(exc))
    report["steps"].append(step)


async def main():
    spec = json.load(sys.stdin)
    reports = {}
    for scenario in spec["scenarios"]:
        reports[scenario["name"]] = await run_scenario(spec["url"], scenario)
    print("REPORT " + json.dumps(reports), flush=True)


if __name__ == "__main__":
    anyio.run(main)
