"""Fixed-window counters for rate limits and sign-in throttling.

Counts live in Redis (shared by every api replica): INCR on a key that expires with its window,
in one transaction. When Redis cannot be reached, counting goes on in this process's memory
with the same semantics (one warning in the log) and Redis is tried again 30 seconds later: a
Redis outage must not turn every request into a 500, nor switch the limits off.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

from core.errors import RateLimited

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 100  # longer keys (they may carry user input) are hashed
# A loaded 2-core box took over 0.5 s at times; a real outage costs this once per retry period.
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int  # hits in the current window, including this one for `hit`
    limit: int
    retry_after: int  # seconds until the window resets (>= 1 when not allowed, else 0)


def _decision(count: int, limit: int, allowed: bool, seconds_left: float) -> Decision:
    retry = 0 if allowed else max(1, math.ceil(seconds_left))
    return Decision(allowed=allowed, count=count, limit=limit, retry_after=retry)


class MemoryCounter:
    """The in-process counters (thread-safe), used while Redis is away."""

    SWEEP_ABOVE = 10_000  # entries; expired ones are dropped when there are more

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._windows.get(key)
        if entry is not None and entry[1] <= now:
            del self._windows[key]
            return None
        return entry

    def hit(self, key: str, window_seconds: int) -> tuple[int, float]:
        """Count one hit; the window's count and the seconds left in it."""
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if entry is None:
                if len(self._windows) >= self.SWEEP_ABOVE:
                    self._sweep(now)
                entry = (0, now + window_seconds)
            count, expires = entry[0] + 1, entry[1]
            self._windows[key] = (count, expires)
            return count, expires - now

    def peek(self, key: str) -> tuple[int, float]:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            return (0, 0.0) if entry is None else (entry[0], entry[1] - now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, expires) in self._windows.items() if expires <= now]:
            del self._windows[key]


class Limiter:
    """Fixed-window counters keyed by string (`prefix` + key) in Redis, with an in-memory
    fallback. `redis_url=""` counts in memory only."""

    def __init__(
        self,
        redis_url: str,
        prefix: str = "zk:rl:",
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_redis_after: float = REDIS_RETRY_SECONDS,
    ) -> None:
        self.prefix = prefix
        self._clock = clock
        self._retry_after = retry_redis_after
        self._memory = MemoryCounter(clock)
        self._redis: redis.Redis | None = None
        if redis_url:
            self._redis = redis.Redis.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
        self._state_lock = threading.Lock()
        self._down_until: float | None = None  # clock time to try Redis again, when down

    # -- public ---------------------------------------------------------------------------

    def hit(self, key: str, limit: int, window_seconds: int) -> Decision:
        """Count one hit; allowed while the window's count (this hit included) <= limit."""
        k = self._key(key)
        client = self._client()
        if client is not None:
            try:
                count, seconds_left = self._redis_hit(client, k, window_seconds)
            except RedisError as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return _decision(count, limit, count <= limit, seconds_left)
        count, seconds_left = self._memory.hit(k, window_seconds)
        return _decision(count, limit, count <= limit, seconds_left)

    def peek(self, key: str, limit: int, window_seconds: int) -> Decision:
        """The window's count without counting; allowed while count < limit."""
        k = self._key(key)
        client = self._client()
        if client is not None:
            try:
                count, seconds_left = self._redis_peek(client, k, window_seconds)
            except RedisError as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return _decision(count, limit, count < limit, seconds_left)
        count, seconds_left = self._memory.peek(k)
        return _decision(count, limit, count < limit, seconds_left)

    def reset(self, key: str) -> None:
        """Forget the key's window (in Redis and in the memory fallback)."""
        k = self._key(key)
        self._memory.reset(k)
        client = self._client()
        if client is not None:
            try:
                client.delete(k)
            except RedisError as exc:
                self._went_down(exc)
            else:
                self._came_back()

    @property
    def using_memory(self) -> bool:
        """True while counting in memory (no Redis configured, or Redis away)."""
        return self._redis is None or self._down_until is not None

    # -- internals ------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        if len(key) > MAX_KEY_CHARS:
            key = "h:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self.prefix + key

    def _client(self) -> redis.Redis | None:
        """Redis, unless it is away and the retry time has not come."""
        if self._redis is None:
            return None
        down_until = self._down_until
        if down_until is not None and self._clock() < down_until:
            return None
        return self._redis

    def _went_down(self, exc: Exception) -> None:
        with self._state_lock:
            first = self._down_until is None
            self._down_until = self._clock() + self._retry_after
        if first:
            log.warning(
                "rate limits: Redis unreachable (%s); counting in this process's memory and "
                "trying Redis again in %.0f s",
                exc,
                self._retry_after,
            )
        else:
            log.debug("rate limits: Redis still unreachable (%s)", exc)

    def _came_back(self) -> None:
        if self._down_until is None:
            return
        with self._state_lock:
            if self._down_until is None:
                return
            self._down_until = None
        log.info("rate limits: Redis reachable again; counting there")

    @staticmethod
    def _redis_hit(client: redis.Redis, key: str, window_seconds: int) -> tuple[int, float]:
        pipe = client.pipeline(transaction=True)
        pipe.set(key, 0, ex=window_seconds, nx=True)  # a new window starts its clock
        pipe.incr(key)
        pipe.pttl(key)
        _, count, pttl = pipe.execute()
        if pttl < 0:  # no expiry (should not happen): give it the window so it cannot stick
            client.expire(key, window_seconds)
            pttl = window_seconds * 1000
        return int(count), pttl / 1000

    @staticmethod
    def _redis_peek(client: redis.Redis, key: str, window_seconds: int) -> tuple[int, float]:
        pipe = client.pipeline(transaction=True)
        pipe.get(key)
        pipe.pttl(key)
        raw, pttl = pipe.execute()
        if raw is None:
            return 0, 0.0
        return int(raw), (pttl / 1000 if pttl > 0 else float(window_seconds))


def enforce(limiter: Limiter, key: str, limit: int, window_seconds: int, what: str) -> None:
    """Count a hit; past the limit raise `RateLimited` (429 with Retry-After)."""
    decision = limiter.hit(key, limit, window_seconds)
    if not decision.allowed:
        raise RateLimited(
            f"too many {what}; try again in {decision.retry_after} seconds",
            retry_after=decision.retry_after,
        )
