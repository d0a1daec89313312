"""What the Python SDK clients share: `client_python_sdk1.py` (`mcp` 1.x in
`.venvs/mcp1`), `client_python_sdk2.py` (`mcp` 2.x in `.venvs/test`) and
`scripts/demo_client.py` (2.x), plus the demo's discovery flow by hand.

The two SDK lines run in different virtualenvs with different HTTP clients
(`httpx` for 1.x, `httpx2` for 2.x), so this module imports neither `mcp` nor
an HTTP client at module level: the caller hands in its HTTP client module
and what its SDK's callback handler returns. The SDK's OAuth providers are
imported where they are built, from the modules and with the arguments both
lines share (`mcp.client.auth.OAuthClientProvider`,
`mcp.shared.auth.OAuthClientMetadata`,
`mcp.client.auth.extensions.client_credentials.ClientCredentialsOAuthProvider`).

The client scripts run with this folder as their first `sys.path` entry;
`scripts/demo_client.py` puts it there.
"""

import json
import sys
import traceback
from urllib.parse import parse_qs, urljoin, urlparse

REDIRECT_URI = "http://127.0.0.1:1/callback"  # never fetched: the browser stops at it
REDIRECTS = (301, 302, 303, 307, 308)


def new_report(name, **extra):
    """A scenario's report, filled in as the client goes."""
    return {"name": name, "http": [], "browser": [], "authorizations": [], "tokens": [],
            "steps": [], "protocol_version": None, "fatal": None, **extra}


def exchange(response):
    """What a report keeps of one HTTP exchange the SDK made (an `httpx` or
    `httpx2` response)."""
    return {"method": response.request.method, "url": str(response.request.url),
            "status": response.status_code,
            "www_authenticate": response.headers.get("www-authenticate"),
            "mcp_method": response.request.headers.get("mcp-method")}


class MemoryStorage:
    """The SDK's token storage, in memory; reports each token's scope (never
    the token) and the client id it registered."""

    def __init__(self, report):
        self.tokens = None
        self.client_info = None
        self.report = report

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens
        self.report["tokens"].append({"scope": tokens.scope, "refresh_token": tokens.refresh_token is not None})

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info
        self.report["registered_client_id"] = client_info.client_id


def next_hop(url, response):
    """One step of a browser at the authorization server, after `response`
    to a GET of `url`: `(next URL, None)` while it redirects, `(None, query)`
    once it redirects to REDIRECT_URI, where the browser stops (`query` as
    `parse_qs` gives it). Raises when the server stops anywhere else or
    refuses the authorization."""
    location = response.headers.get("location")
    if response.status_code not in REDIRECTS or not location:
        raise RuntimeError(f"the authorization server stopped at {url}: {response.status_code} {response.text[:300]}")
    url = urljoin(url, location)
    if not url.startswith(REDIRECT_URI):
        return url, None
    params = parse_qs(urlparse(url).query)
    if "error" in params:
        raise RuntimeError(f"authorization refused: {params}")
    return None, params


class HeadlessBrowser:
    """Plays the user agent of the authorization-code flow: fetches the
    authorization URL and follows the redirects through the authorization
    server's auto-completing login and consent pages (naming the account,
    and the scopes the user approves on the n-th authorization), then hands
    the code back to the SDK.

    `http` is the caller's HTTP client module (`httpx` or `httpx2`);
    `code_result(code=, state=, iss=)` makes what the SDK's callback handler
    returns."""

    def __init__(self, scenario, report, http, code_result):
        self.account = scenario.get("account", "alice")
        self.consents = scenario.get("consents") or [None]
        self.report = report
        self.http = http
        self.code_result = code_result
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
        async with self.http.AsyncClient(follow_redirects=False, headers=headers, timeout=10) as browser:
            for _ in range(20):
                response = await browser.get(url)
                self.report["browser"].append([urlparse(url).path, response.status_code])
                url, params = next_hop(url, response)
                if params is not None:
                    self.pending = self.code_result(code=params["code"][0], state=params.get("state", [None])[0],
                                                    iss=params.get("iss", [None])[0])
                    return
        raise RuntimeError("too many redirects")

    async def callback_handler(self):
        result, self.pending = self.pending, None
        return result


def authorization_code_provider(url, client_name, storage, browser):
    """The SDK's OAuth provider for the authorization-code flow (PKCE), as
    a public client it registers dynamically, redirecting to REDIRECT_URI;
    `browser` (a HeadlessBrowser) plays the user."""
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name=client_name,
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )


def oauth_provider(url, scenario, report, client_name, browser):
    """The SDK's OAuth provider for a scenario's flow, its tokens in a
    MemoryStorage reporting to `report`: client credentials with the
    scenario's client, else the authorization-code flow with `browser`."""
    storage = MemoryStorage(report)
    if scenario["flow"] == "client_credentials":
        from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

        return ClientCredentialsOAuthProvider(
            server_url=url, storage=storage, client_id=scenario["client_id"],
            client_secret=scenario["client_secret"], issuer=scenario.get("issuer"))
    return authorization_code_provider(url, client_name, storage, browser)


def describe_error(exc):
    """An error as the SDK surfaced it: its type and message, and the
    JSON-RPC error code when it carries one."""
    out = {"type": type(exc).__name__, "message": str(exc)[:500]}
    error = getattr(exc, "error", None)
    if error is not None and hasattr(error, "code"):
        out["code"] = error.code
        out["message"] = error.message
    return out


def tool_result(content, is_error):
    """A tool call's result (its `content` and error flag) as reported."""
    texts = [c.text for c in content if getattr(c, "type", None) == "text"]
    return {"is_error": bool(is_error), "text": " ".join(texts)}


def fatal(exc):
    """What ended a scenario early, for its report."""
    return {"type": type(exc).__name__, "message": str(exc)[:2000],
            "traceback": traceback.format_exc()[-4000:]}


async def run_spec(run_scenario):
    """The client scripts' main: reads the spec (`url`, `scenarios`) on
    stdin, runs `run_scenario(url, scenario)` for each scenario in order and
    prints one line `REPORT <json>`: scenario name -> its report."""
    spec = json.load(sys.stdin)
    reports = {}
    for scenario in spec["scenarios"]:
        reports[scenario["name"]] = await run_scenario(spec["url"], scenario)
    print("REPORT " + json.dumps(reports), flush=True)
