"""Store tests run against every backend; Redis is a real redis-server."""

from tests.redis_fixture import redis_server_fixture, redis_url_fixture
from tests.store.fixtures import fake_clock_fixture, store_factory_fixture, store_fixture

__all__ = [
    "fake_clock_fixture",
    "redis_server_fixture",
    "redis_url_fixture",
    "store_factory_fixture",
    "store_fixture",
]
