"""Rate-limit counters on the real Redis: fixed windows shared between limiters (as between api
replicas), peek and reset, and the fall-back to memory when Redis cannot be reached."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from api.rate_limit import Limiter, enforce
from core.errors import RateLimited

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(redis_url: str) -> str:
    return f"zk:test:{uuid.uuid4().hex}:"


def test_counts_live_in_redis_and_are_shared(redis_url: str, prefix: str) -> None:
    one, two = Limiter(redis_url, prefix=prefix), Limiter(redis_url, prefix=prefix)
    assert one.hit("k", 3, 60).count == 1
    assert two.hit("k", 3, 60).count == 2
    assert one.hit("k", 3, 60).allowed
    refused = two.hit("k", 3, 60)
    assert not refused.allowed and refused.count == 4 and 1 <= refused.retry_after <= 60
    assert not one.using_memory and not two.using_memory
    client = redis.Redis.from_url(redis_url)
    assert int(client.get(prefix + "k") or 0) == 4
    assert 0 < client.ttl(prefix + "k") <= 60


def test_window_expires_in_redis(redis_url: str, prefix: str) -> None:
    lim = Limiter(redis_url, prefix=prefix)
    assert lim.hit("k", 1, 1).allowed
    refused = lim.hit("k", 1, 1)
    assert not refused.allowed and refused.retry_after == 1
    time.sleep(1.2)
    fresh = lim.hit("k", 1, 1)
    assert fresh.allowed and fresh.count == 1


def test_peek_and_reset_in_redis(redis_url: str, prefix: str) -> None:
    lim = Limiter(redis_url, prefix=prefix)
    assert lim.peek("k", 2, 60).count == 0
    lim.hit("k", 2, 60)
    assert lim.peek("k", 2, 60).allowed
    lim.hit("k", 2, 60)
    locked = lim.peek("k", 2, 60)
    assert not locked.allowed and locked.count == 2 and 1 <= locked.retry_after <= 60
    assert lim.peek("k", 2, 60).count == 2  # peeking does not count
    lim.reset("k")
    assert lim.peek("k", 2, 60).count == 0
    assert redis.Redis.from_url(redis_url).exists(prefix + "k") == 0


def test_long_keys_are_hashed_in_redis(redis_url: str, prefix: str) -> None:
    lim = Limiter(redis_url, prefix=prefix)
    lim.hit("login:user:" + "x" * 100_000, 5, 60)
    keys = redis.Redis.from_url(redis_url).keys(prefix + "*")
    assert len(keys) == 1 and len(keys[0]) <= len(prefix) + 100


def test_enforce_against_redis(redis_url: str, prefix: str) -> None:
    lim = Limiter(redis_url, prefix=prefix)
    enforce(lim, "q", 1, 60, "questions")
    with pytest.raises(RateLimited, match="too many questions; try again in"):
        enforce(lim, "q", 1, 60, "questions")


def test_unreachable_redis_falls_back_to_memory(caplog: pytest.LogCaptureFixture) -> None:
    lim = Limiter("redis://127.0.0.1:1/0", prefix="zk:test:")
    with caplog.at_level(logging.WARNING, logger="api.rate_limit"):
        started = time.monotonic()
        decisions = [lim.hit("k", 2, 60) for _ in range(3)]
        assert lim.peek("k", 2, 60).count == 3
        lim.reset("k")
        assert lim.peek("k", 2, 60).count == 0
        took = time.monotonic() - started
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[2].retry_after >= 1
    assert lim.using_memory
    assert took < 2  # one failed attempt at most, then memory until the retry time
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis unreachable" in warnings[0].getMessage()


def test_redis_is_tried_again_after_30_seconds(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    lim = Limiter(redis_url, prefix=prefix, clock=lambda: now[0])
    real_hit = Limiter._redis_hit
    attempts: list[str] = []

    def failing(client: redis.Redis, key: str, window: int) -> tuple[int, float]:
        attempts.append(key)
        raise RedisConnectionError("simulated outage")

    monkeypatch.setattr(lim, "_redis_hit", failing)
    assert lim.hit("k", 10, 60).count == 1  # memory
    assert lim.hit("k", 10, 60).count == 2
    assert len(attempts) == 1 and lim.using_memory
    now[0] += 29
    lim.hit("k", 10, 60)
    assert len(attempts) == 1  # not before 30 s
    now[0] += 1
    lim.hit("k", 10, 60)
    assert len(attempts) == 2  # tried again, still down
    monkeypatch.setattr(lim, "_redis_hit", real_hit)
    now[0] += 30
    back = lim.hit("k", 10, 60)
    assert back.count == 1 and not lim.using_memory  # counted in Redis again
    assert int(redis.Redis.from_url(redis_url).get(prefix + "k") or 0) == 1


def test_only_questions_count_against_the_question_limit(settings) -> None:  # type: ignore[no-untyped-def]
    """Reading, renaming and rating conversations is browsing, not asking: the web UI does it
    on every screen. Only POST /api/v1/chat (and /v1/chat/completions) spend the question
    limit."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core import db
    from core.models import Role
    from core.repo import users
    from tests.integration.api_helpers import V1, auth

    s = settings.model_copy(update={"rate_limit_chat_per_minute": 2})
    with db.session_scope(s) as session:
        users.create_user(session, "asker", "correct horse battery", role=Role.staff)
    with TestClient(create_app(s)) as client:
        login = client.post(
            f"{V1}/auth/login", json={"username": "asker", "password": "correct horse battery"}
        )
        headers = auth(login.json()["access_token"])
        for _ in range(10):
            assert client.get(f"{V1}/conversations", headers=headers).status_code == 200
            assert client.get(f"{V1}/conversations/1", headers=headers).status_code == 404
        for _ in range(2):  # an empty question is refused after it was counted
            r = client.post(f"{V1}/chat", json={"question": " "}, headers=headers)
            assert r.status_code == 422, r.text
        r = client.post(f"{V1}/chat", json={"question": " "}, headers=headers)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
        assert client.get(f"{V1}/conversations", headers=headers).status_code == 200
