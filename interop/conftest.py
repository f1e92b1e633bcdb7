"""pytest fixtures: real peers, torn down after each test."""

import pytest

from harness import OtlpReceiver, W3cUpstream


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    yield r
    r.stop()


@pytest.fixture
def upstream():
    u = W3cUpstream()
    yield u
    u.stop()
