"""Store tests run against every backend; Redis is a real redis-server."""

from tests.redis_fixture import redis_server, redis_url  # noqa: F401
from tests.store.fixtures import fake_clock, store, store_factory  # noqa: F401
