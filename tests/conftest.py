import pytest

from harness import ENVOY_VERSIONS, RecordingUpstream
from mcp_upstream import McpUpstream


@pytest.fixture(params=ENVOY_VERSIONS, scope="module")
def envoy_version(request):
    """Every end-to-end test runs against each tested Envoy version."""
    return request.param


@pytest.fixture(scope="module")
def upstream():
    server = RecordingUpstream()
    yield server
    server.close()


@pytest.fixture(scope="session")
def sdk_servers():
    """The official SDK's MCP server (`mcp_upstream.py`) in its two shapes,
    for the whole run: (default: sessions for handshake-era requests, SSE
    answers; JSON answers, stateless). `mcp_client.SdkEnvoy` puts Envoy in
    front of both; `mcp_server` and `mcp_json_server` are each for one test."""
    with McpUpstream(json_response=False, stateless=False) as default, \
            McpUpstream(json_response=True, stateless=True) as json_mode:
        yield default, json_mode


@pytest.fixture
def mcp_server(sdk_servers):
    """The default SDK server, with nothing recorded yet in this test."""
    sdk_servers[0].clear()
    return sdk_servers[0]


@pytest.fixture
def mcp_json_server(sdk_servers):
    """The JSON-response, stateless SDK server, with nothing recorded yet in
    this test."""
    sdk_servers[1].clear()
    return sdk_servers[1]
