"""Rate-limit counters, the in-memory path: fixed windows on a fake clock, peek, reset, hashed
long keys, thread safety, the 429 raised by enforce."""

from __future__ import annotations

import threading

import pytest

from api.rate_limit import MAX_KEY_CHARS, Decision, Limiter, MemoryCounter, enforce
from core.errors import RateLimited


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> Limiter:
    return Limiter("", prefix="t:", clock=clock)  # no Redis: memory only


def test_hits_up_to_the_limit_are_allowed_then_refused_with_retry_after(
    limiter: Limiter, clock: FakeClock
) -> None:
    decisions = [limiter.hit("k", 3, 60) for _ in range(3)]
    assert [d.count for d in decisions] == [1, 2, 3]
    assert all(d.allowed and d.retry_after == 0 and d.limit == 3 for d in decisions)
    clock.advance(20)
    refused = limiter.hit("k", 3, 60)
    assert refused == Decision(allowed=False, count=4, limit=3, retry_after=40)
    assert limiter.using_memory


def test_window_expiry_starts_a_new_count(limiter: Limiter, clock: FakeClock) -> None:
    for _ in range(5):
        limiter.hit("k", 2, 10)
    clock.advance(9.5)
    last = limiter.hit("k", 2, 10)
    assert not last.allowed and last.retry_after == 1  # 0.5 s left rounds up, never 0
    clock.advance(0.5)
    fresh = limiter.hit("k", 2, 10)
    assert fresh.allowed and fresh.count == 1
    # a hit does not extend the window: it ends 10 s after its first hit
    clock.advance(9.9)
    assert limiter.hit("k", 2, 10).count == 2
    clock.advance(0.1)
    assert limiter.hit("k", 2, 10).count == 1


def test_peek_does_not_count_and_allows_below_the_limit(limiter: Limiter, clock: FakeClock) -> None:
    assert limiter.peek("k", 2, 60) == Decision(True, 0, 2, 0)
    limiter.hit("k", 2, 60)
    assert limiter.peek("k", 2, 60) == Decision(True, 1, 2, 0)
    assert limiter.peek("k", 2, 60).count == 1
    limiter.hit("k", 2, 60)
    clock.advance(15)
    locked = limiter.peek("k", 2, 60)
    assert not locked.allowed and locked.count == 2 and locked.retry_after == 45
    clock.advance(45)
    assert limiter.peek("k", 2, 60) == Decision(True, 0, 2, 0)


def test_reset_forgets_the_window_and_keys_are_separate(limiter: Limiter) -> None:
    for _ in range(3):
        limiter.hit("a", 3, 60)
    limiter.hit("b", 3, 60)
    limiter.reset("a")
    assert limiter.peek("a", 3, 60).count == 0
    assert limiter.peek("b", 3, 60).count == 1
    limiter.reset("never-seen")  # no error


def test_long_keys_are_hashed_but_still_distinct(limiter: Limiter) -> None:
    long_a, long_b = "login:user:" + "a" * 10_000, "login:user:" + "a" * 9_999 + "b"
    assert len(limiter._key(long_a)) <= len(limiter.prefix) + MAX_KEY_CHARS
    assert "aaaa" not in limiter._key(long_a)
    assert limiter._key("short") == "t:short"
    limiter.hit(long_a, 5, 60)
    limiter.hit(long_a, 5, 60)
    assert limiter.peek(long_a, 5, 60).count == 2
    assert limiter.peek(long_b, 5, 60).count == 0
    limiter.reset(long_a)
    assert limiter.peek(long_a, 5, 60).count == 0


def test_enforce_raises_rate_limited_past_the_limit(limiter: Limiter, clock: FakeClock) -> None:
    enforce(limiter, "u", 2, 60, "requests")
    enforce(limiter, "u", 2, 60, "requests")
    clock.advance(30)
    with pytest.raises(RateLimited) as info:
        enforce(limiter, "u", 2, 60, "requests")
    assert info.value.retry_after == 30
    assert info.value.status == 429
    assert info.value.reason == "too many requests; try again in 30 seconds"


def test_memory_counter_is_thread_safe() -> None:
    counter = MemoryCounter()

    def work() -> None:
        for _ in range(2000):
            counter.hit("k", 60)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.peek("k")[0] == 16_000


def test_memory_counter_sweeps_expired_windows(clock: FakeClock) -> None:
    counter = MemoryCounter(clock)
    counter.SWEEP_ABOVE = 10
    for i in range(10):
        counter.hit(f"old{i}", 5)
    clock.advance(6)
    counter.hit("new", 5)
    assert len(counter._windows) == 1
