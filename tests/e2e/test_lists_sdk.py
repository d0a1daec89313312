"""README "List filtering" with real MCP software on both ends: the
official Python SDK's server upstream (JSON and SSE answers) and the
official Python SDK's client, in the 2026-07-28 and the legacy (2025-11-25)
protocol."""

import asyncio

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from configs import ISSUER, base_config, inline_provider
from harness import Envoy
from mcp_upstream import McpUpstream
from tokens import RsaKey, claims

KEY = RsaKey("sdk-lists")
ALL_TOOLS = {"get_weather", "search", "set_config", "delete_everything"}


def config(resource):
    return base_config([inline_provider(KEY)], [
        {"name": "everyone lists", "effect": "allow",
         "methods": ["initialize", "server/discover", "notifications/*", "ping", "tools/list"]},
        {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*", "search"],
         "roles": ["reader", "admin"]},
        {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"], "roles": ["admin"]},
        {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]},
    ], resource=resource)


@pytest.fixture(scope="module", params=[False, True], ids=["sse-server", "json-server"])
def stack(request, envoy_version):
    with McpUpstream(json_response=request.param) as server:
        with Envoy(envoy_version, lambda port: config(f"http://127.0.0.1:{port}/mcp"), server.port) as envoy:
            yield envoy, server, f"http://127.0.0.1:{envoy.port}/mcp"


async def session(url, roles, mode, work):
    token = KEY.sign(claims(ISSUER, url, roles=roles))
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20)
    async with http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client:
            return await work(client)


def run(url, roles, mode, work):
    return asyncio.run(session(url, roles, mode, work))


async def tool_names(client):
    return {t.name for t in (await client.list_tools()).tools}


MODES = ["2026-07-28", "legacy"]


@pytest.mark.parametrize("mode", MODES)
def test_admin_sees_every_tool_it_may_call(stack, mode):
    _, _, url = stack
    assert run(url, ["admin"], mode, tool_names) == ALL_TOOLS - {"delete_everything"}


@pytest.mark.parametrize("mode", MODES)
def test_reader_sees_only_its_tools(stack, mode):
    _, server, url = stack
    server.clear()
    assert run(url, ["reader"], mode, tool_names) == {"get_weather", "search"}
    listed = [r for r in server.seen() if any(m["method"] == "tools/list" for m in r["rpc"])]
    assert listed, "the list came from the real server"


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_missing_from_the_list_is_also_refused(stack, mode):
    _, server, url = stack

    async def work(client):
        names = await tool_names(client)
        allowed = await client.call_tool("get_weather", {"city": "Oslo"})
        try:
            refused = await client.call_tool("set_config", {"key": "k", "value": "v"})
        except Exception as e:  # the SDK surfaces the 403 as an error
            refused = e
        return names, allowed, refused

    server.clear()
    names, allowed, refused = run(url, ["reader"], mode, work)
    assert "set_config" not in names
    assert not getattr(allowed, "is_error", getattr(allowed, "isError", False))
    assert "Oslo" in str(allowed.content)
    refused_text = str(refused)
    assert isinstance(refused, Exception) or getattr(refused, "is_error", getattr(refused, "isError", False)), \
        refused_text
    assert ("tools/call", "set_config") not in server.calls()
    assert ("tools/call", "get_weather") in server.calls()
