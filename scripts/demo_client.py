"""The MCP client of `make demo`: the official Python SDK 2.x (`mcp`), its
OAuth provider doing the whole flow from the filter's 401 on its own, with
the interop tests' headless browser (`tests/interop/oauth_helpers.py`)
playing the user at the authorization server's login and consent pages.

Unlike the interop tests' client script this one is a library: `session()`
opens one SDK session and yields the SDK's `Client` together with a log of
what happened on the wire, so that `scripts/demo.py` can narrate each call
as it happens. The log keeps, for every HTTP exchange the SDK made, the
method, URL, status and `WWW-Authenticate` header, and the body of every
error answer (the filter's JSON-RPC error). Tokens are kept only as their
decoded claims; a token string is never logged.
"""

import base64
import json
import sys
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "tests", ROOT / "tests" / "interop"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import httpx2  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.auth import AuthorizationCodeResult  # noqa: E402
from oauth_helpers import (HeadlessBrowser, MemoryStorage, authorization_code_provider,  # noqa: E402
                           describe_error, exchange, tool_result)


def jwt_parts(token):
    """The (header, claims) of a JWT, decoded without verification: for
    display only (the filter is what verifies)."""
    def part(segment):
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    header, payload, _ = token.split(".")
    return part(header), part(payload)


class ClaimsStorage(MemoryStorage):
    """The interop client's token storage, also keeping each token's claims."""

    async def set_tokens(self, tokens):
        await super().set_tokens(tokens)
        try:
            _, claims = jwt_parts(tokens.access_token)
        except ValueError:
            claims = None
        self.report["tokens"][-1]["claims"] = claims


@asynccontextmanager
async def session(url, account, consents=None, client_name="mcp-authz demo (python sdk)"):
    """One SDK session against `url`, starting with no token. `account` is
    who logs in at the authorization server; `consents[n]` the scopes the
    user approves on the n-th authorization (None: all requested).
    Yields (client, log)."""
    log = {"http": [], "browser": [], "authorizations": [], "tokens": [], "registered_client_id": None}
    browser = HeadlessBrowser({"account": account, "consents": consents or [None]}, log, httpx2,
                              AuthorizationCodeResult)
    auth = authorization_code_provider(url, client_name, ClaimsStorage(log), browser)

    async def on_response(response):
        entry = {**exchange(response), "mcp_name": response.request.headers.get("mcp-name"), "body": None}
        if response.status_code >= 400:
            # An error answer is small; reading it here leaves it cached for the SDK.
            await response.aread()
            entry["body"] = response.text
        log["http"].append(entry)

    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30, read=60),
                                  event_hooks={"response": [on_response]}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            log["protocol_version"] = client.protocol_version
            yield client, log


async def call(client, name, arguments):
    """Calls a tool; returns {"ok": True, "result": ...} or {"ok": False, "error": ...}
    as the SDK surfaced it."""
    try:
        result = await client.call_tool(name, arguments)
        return {"ok": True, "result": tool_result(result.content, result.is_error)}
    except Exception as exc:  # noqa: BLE001 - the SDK's error is what is shown
        return {"ok": False, "error": describe_error(exc)}


async def list_tools(client):
    return sorted(t.name for t in (await client.list_tools()).tools)
