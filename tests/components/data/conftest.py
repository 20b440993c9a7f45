"""Real `redis-server`s on the generated config, for tests/components/data/test_redis*.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stacks.config import RedisConfig
from tests.components.data.redis_server import RedisServer
from tests.components.data.redis_values import PASSWORD, PROD_REDIS
from tests.support.tools import require_tool


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    exe = require_tool("redis-server")
    made: list[RedisServer] = []

    def make(cfg: RedisConfig, password: str = PASSWORD) -> RedisServer:
        server = RedisServer(exe, cfg, password, tmp_path / f"redis-{len(made)}")
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def prod_server(redis: Callable[..., RedisServer]) -> RedisServer:
    server = redis(PROD_REDIS)
    server.start()
    return server
