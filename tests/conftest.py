import pytest

from harness import ENVOY_VERSIONS, RecordingUpstream


@pytest.fixture(params=ENVOY_VERSIONS, scope="module")
def envoy_version(request):
    """Every end-to-end test runs against each tested Envoy version."""
    return request.param


@pytest.fixture(scope="module")
def upstream():
    server = RecordingUpstream()
    yield server
    server.close()
