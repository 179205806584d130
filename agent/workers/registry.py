"""Model workers that join and leave a pool without a restart, through Redis.

A worker started with `--advertise URL` keeps a signed entry in a Redis hash: its URL
and the time (Redis's clock) until which it promises to answer. It renews the entry
every few seconds and deletes it when told to stop. The call servers' pools read the
hash on every health round; an entry that lapsed, or whose signature does not verify
with the workers' shared secret, is ignored. Only a holder of the secret can add a
worker, so whoever can write to Redis still cannot steer callers' audio (and the
secret, which the pool presents) to a host of their choosing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import redis.asyncio as redis
from loguru import logger
from redis.exceptions import RedisError

KEY = "callwright:model-workers"
RENEW_S = 2.0
TTL_S = 8.0  # three renewals may fail before the pool stops routing to the worker


def _signature(secret: str, url: str, until_ms: int) -> str:
    return hmac.new(secret.encode(), f"{url}|{until_ms}".encode(), hashlib.sha256).hexdigest()


async def _now_ms(client: redis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


class WorkerRegistry:
    """The advertised model workers in one Redis.

    Args:
        redis_url: The Redis the call servers use (`REDIS_URL`).
        secret: The workers' shared secret: signs entries and checks them.
        key: The hash holding the entries.
    """

    def __init__(self, *, redis_url: str, secret: str, key: str = KEY):
        self._redis = redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._secret = secret
        self._key = key
        self._refused: set[str] = set()  # entries already warned about

    async def advertise(self, url: str, *, ttl_s: float = TTL_S) -> None:
        """Add or renew `url`'s entry, valid for `ttl_s` from now.

        Raises:
            redis.exceptions.RedisError: Redis is away.
        """
        until = await _now_ms(self._redis) + int(ttl_s * 1000)
        entry = {"until": until, "sig": _signature(self._secret, url, until)}
        await self._redis.hset(self._key, url, json.dumps(entry))

    async def keep_advertised(self, url: str, *, every_s: float = RENEW_S) -> None:
        """Renew `url`'s entry every `every_s` until cancelled; Redis being away is logged,
        not fatal (the entry lapses and pools stop routing here until it is back)."""
        failing = False
        while True:
            try:
                await self.advertise(url)
                if failing:
                    logger.info(f"advertising {url} in Redis again")
                failing = False
            except RedisError as exc:
                if not failing:
                    logger.warning(f"cannot advertise {url} in Redis: {exc!r}")
                failing = True
            await asyncio.sleep(every_s)

    async def withdraw(self, url: str) -> None:
        """Delete `url`'s entry, so pools stop sending it new calls; Redis errors are logged."""
        try:
            await self._redis.hdel(self._key, url)
        except RedisError as exc:
            logger.warning(f"cannot withdraw {url} from Redis: {exc!r}")

    async def members(self) -> list[str]:
        """The URLs whose entries are current and correctly signed.

        Raises:
            redis.exceptions.RedisError: Redis is away.
        """
        entries = await self._redis.hgetall(self._key)
        now = await _now_ms(self._redis)
        urls = []
        for raw_url, raw in entries.items():
            url = raw_url.decode()
            try:
                entry = json.loads(raw)
                until, sig = int(entry["until"]), str(entry["sig"])
            except (ValueError, KeyError, TypeError):
                self._refuse(url, "its entry is unreadable")
                continue
            if not hmac.compare_digest(sig, _signature(self._secret, url, until)):
                self._refuse(url, "it is not signed with the workers' secret")
            elif until > now:
                urls.append(url)
        return sorted(urls)

    def _refuse(self, url: str, why: str) -> None:
        if url not in self._refused:  # once: the pools read the registry twice a second
            self._refused.add(url)
            logger.warning(f"model worker registry: {url!r} ignored: {why}")

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()
