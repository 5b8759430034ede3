"""natkit serve tests with a store: Redis is a real redis-server."""

from tests.redis_fixture import redis_server_fixture, redis_url_fixture

__all__ = ["redis_server_fixture", "redis_url_fixture"]
