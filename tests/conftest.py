"""Shared fixtures: the real-server fixtures come from rvlm.testing.pytest_plugin."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request, monkeypatch):
    """Run the test once over RESP2 and once over RESP3 (``RVLM_PROTOCOL``)."""
    monkeypatch.setenv("RVLM_PROTOCOL", str(request.param))
    return request.param


@pytest.fixture
def notify(redis_client):
    """Notifications off before the test; what the test leaves behind is checked by it, then
    the setting is put back for the next test."""
    from rvlm.core.redis.notify import read_setting

    before = read_setting(redis_client)
    redis_client.config_set("notify-keyspace-events", "")
    yield
    redis_client.config_set("notify-keyspace-events", before)
