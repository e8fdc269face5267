"""Container health checks of the zhiku image (standard library and Celery only, no curl).

    python deploy/healthcheck.py api [URL]   # liveness: GET /healthz answers 200
    python deploy/healthcheck.py worker      # this host's Celery worker answers a ping

Exit status 0 when healthy, 1 otherwise (with the reason on stderr). Liveness only: a worker
or api that is up but waiting for the database is not restarted; readiness is /readyz.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

API_URL = "http://127.0.0.1:8000/healthz"


def check_api(url: str = API_URL, timeout: float = 5.0) -> str | None:
    """None when the api answers 200, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return None if reply.status == 200 else f"{url} answered {reply.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def check_worker(node: str | None = None, timeout: float = 10.0) -> str | None:
    """None when the Celery worker `node` (default celery@<this host>) answers a ping through
    the broker, else the reason."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from core.tasks import celery_app

    node = node or f"celery@{socket.gethostname()}"
    try:
        replies = celery_app().control.ping(destination=[node], timeout=timeout)
    except Exception as exc:  # the broker is down or refuses us: unhealthy, with the reason
        return f"ping {node}: {exc}"
    if not any(node in reply for reply in replies):
        return f"worker {node} did not answer a ping within {timeout:.0f} s"
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("api", "worker"):
        print("usage: healthcheck.py api [URL] | worker [NODE]", file=sys.stderr)
        return 2
    arg = argv[2] if len(argv) > 2 else None
    problem = check_api(arg or API_URL) if argv[1] == "api" else check_worker(arg)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
