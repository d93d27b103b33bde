"""Shared by the end-to-end tests: the Redis database they use as the broker, emptied before and
after each test (TEST_BROKER_URL; CI starts Redis)."""
from __future__ import annotations

import os

import pytest
import redis as redis_client


@pytest.fixture
def redis_url():
    url = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
    client = redis_client.Redis.from_url(url)
    try:
        client.flushdb()
    except redis_client.ConnectionError as exc:
        pytest.fail(f"the end-to-end tests need Redis at {url} (CI starts it): {exc}")
    yield url
    client.flushdb()
