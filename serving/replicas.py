"""Replica bookkeeping for the model clients (pure logic: no I/O, the clock is injected).

Each replica of an OpenAI-compatible server has a health flag (set by the client's periodic
`GET /models`), a count of requests in flight, and a circuit breaker fed by real requests:

- closed: requests flow; `failures` consecutive failures open it.
- open: no requests for `reset_seconds`.
- half-open: one trial request may go; its success closes the circuit, its failure opens it
  again for another `reset_seconds`.

`ReplicaSet.pick` chooses where a request goes. With an affinity key (a conversation id) the
home replica is the one with the highest rendezvous weight hash(key, url) among all configured
replicas, so a conversation keeps landing on the replica whose prefix cache already holds it.
The hash is stable across processes (blake2b, not Python's salted `hash`), so every API
process sends a conversation to the same place. While the home replica is unavailable
(unhealthy, circuit open, or already tried by this request) the request goes to the
least-loaded available replica (fewest in flight); without a key it always does.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

Clock = Callable[[], float]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(StrEnum):
    SUCCESS = "success"  # the server answered (2xx, or a 4xx that is the caller's fault)
    FAILURE = "failure"  # connection error, timeout, 5xx, broken stream: counts toward opening
    NEUTRAL = "neutral"  # cancelled by the caller, 429, …: says nothing about the replica


class Breaker:
    def __init__(self, failures: int, reset_seconds: float, clock: Clock = time.monotonic):
        self.threshold = max(1, failures)
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_in_flight = False

    @property
    def state(self) -> CircuitState:
        if self.opened_at is None:
            return CircuitState.CLOSED
        if self.clock() - self.opened_at >= self.reset_seconds:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allows(self) -> bool:
        state = self.state
        if state is CircuitState.HALF_OPEN:
            return not self.trial_in_flight
        return state is CircuitState.CLOSED

    def start(self) -> bool:
        """A request starts; True when it is the half-open trial."""
        if self.state is CircuitState.HALF_OPEN and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def record(self, outcome: Outcome, trial: bool) -> None:
        if trial:
            self.trial_in_flight = False
        if outcome is Outcome.SUCCESS:
            self.failures = 0
            self.opened_at = None
        elif outcome is Outcome.FAILURE:
            self.failures += 1
            state = self.state
            if state is CircuitState.HALF_OPEN or (
                state is CircuitState.CLOSED and self.failures >= self.threshold
            ):
                self.opened_at = self.clock()


@dataclass(eq=False)
class Replica:
    url: str
    breaker: Breaker
    healthy: bool = True  # optimistic until the first health check says otherwise
    in_flight: int = 0
    last_error: str | None = None

    @property
    def available(self) -> bool:
        return self.healthy and self.breaker.allows()


@dataclass(frozen=True)
class ReplicaStatus:
    url: str
    healthy: bool
    in_flight: int
    circuit: CircuitState
    failures: int
    last_error: str | None


@dataclass(frozen=True)
class Lease:
    """One request's hold on a replica, from `ReplicaSet.begin` to `ReplicaSet.end`."""

    replica: Replica
    trial: bool


def rendezvous_weight(key: str, url: str) -> int:
    digest = hashlib.blake2b(f"{url}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class ReplicaSet:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        breaker_failures: int,
        breaker_reset_seconds: float,
        clock: Clock = time.monotonic,
    ):
        if not urls:
            raise ValueError("at least one replica URL is required")
        self.replicas = [
            Replica(url, Breaker(breaker_failures, breaker_reset_seconds, clock)) for url in urls
        ]

    def home(self, affinity_key: str) -> Replica:
        return max(self.replicas, key=lambda r: rendezvous_weight(affinity_key, r.url))

    def pick(
        self, affinity_key: str | None = None, exclude: Collection[str] = ()
    ) -> Replica | None:
        """Where the next attempt goes, or None when every circuit is open. Healthy replicas
        come first; when none passed its last health check, any whose circuit allows is tried.
        Replicas in `exclude` (already tried by this request) are used only when nothing else
        is left."""
        available = [r for r in self.replicas if r.available]
        if not available:
            # Health checks only rank replicas: a loaded server can miss its short health
            # deadline yet answer requests. Only open circuits (real request failures) exclude.
            available = [r for r in self.replicas if r.breaker.allows()]
        fresh = [r for r in available if r.url not in exclude]
        candidates = fresh or available
        if not candidates:
            return None
        if affinity_key is not None:
            home = self.home(affinity_key)
            if home in candidates:
                return home
        # Ties go to the earlier replica in configuration order.
        return min(candidates, key=lambda r: r.in_flight)

    def begin(self, replica: Replica) -> Lease:
        replica.in_flight += 1
        return Lease(replica, replica.breaker.start())

    def end(self, lease: Lease, outcome: Outcome, error: str | None = None) -> None:
        replica = lease.replica
        replica.in_flight -= 1
        replica.breaker.record(outcome, lease.trial)
        if error is not None:
            replica.last_error = error

    def mark_health(self, url: str, healthy: bool, error: str | None = None) -> None:
        for r in self.replicas:
            if r.url == url:
                r.healthy = healthy
                if error is not None:
                    r.last_error = error

    def status(self) -> list[ReplicaStatus]:
        return [
            ReplicaStatus(
                r.url, r.healthy, r.in_flight, r.breaker.state, r.breaker.failures, r.last_error
            )
            for r in self.replicas
        ]

    def describe(self) -> str:
        return "; ".join(
            f"{s.url}: {'up' if s.healthy else 'down'}, circuit {s.circuit}"
            + (f", last error {s.last_error}" if s.last_error else "")
            for s in self.status()
        )
