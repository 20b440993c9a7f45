"""The Redis configs and password the Redis tests share: prod's `redis` block as Pulumi.prod.yaml
sets it, a pure-cache variant of it, and a password of the generated form."""

from __future__ import annotations

import yaml

from stacks.config import RedisConfig
from tools.synth import ROOT

# What `random.RandomPassword("redis-password", length=40, special=False)` generates: 40 alphanumerics.
PASSWORD = "Zq7TOPSECRETredisPassw0rd9xY2wV4uT6sR8pQ"
PROD_REDIS = RedisConfig.model_validate(
    yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["inference-stack:redis"]
)
CACHE_REDIS = PROD_REDIS.model_copy(update={"persistence": "none", "maxmemory_policy": "allkeys-lru"})
