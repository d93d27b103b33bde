"""The Redis cache backend the site uses (settings.CACHES when CACHE_URL is redis://): Django's,
keeping one redis-py client per connection pool. Django builds a new ``redis.Redis`` for every
cache call, and redis-py 5+ fills each new client's table of about 170 response callbacks in its
constructor: 0.3 ms of CPU on every call, a third of a cached page's whole cost in the web process.
A client over a pool holds no connection of its own, so one client serves every call (Django
keeps one cache object per thread, so it is not even shared between threads)."""

from __future__ import annotations

from typing import Any

from django.core.cache.backends import redis as django_redis


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        """The client of the pool Django would pick (the first server for writes), made once."""
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)  # type: ignore[attr-defined]
        return client


class RedisCache(django_redis.RedisCache):
    """``django.core.cache.backends.redis.RedisCache`` with :class:`RedisCacheClient`; same
    LOCATION and OPTIONS."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient
