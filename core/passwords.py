"""Password policy: long enough, not the username, not a well-known password."""

from __future__ import annotations

from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from core.errors import ZhikuError

MIN_LENGTH = 12
MAX_LENGTH = 256
_COMMON = Path(__file__).parent / "data" / "common_passwords.txt"


class WeakPassword(ZhikuError):
    code = "weak_password"
    status = 422


@lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    lines = _COMMON.read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip().lower() for w in lines if w.strip() and not w.startswith("#"))


def _too_simple(password: str) -> bool:
    """One repeated character, or a run of consecutive characters (123456789012, abcdef…)."""
    if len(set(password)) <= 2:
        return True
    if password.isdigit():  # 1234567890123… wraps round
        steps = {(int(b) - int(a)) % 10 for a, b in pairwise(password)}
        return steps <= {1} or steps <= {9}
    steps = {ord(b) - ord(a) for a, b in pairwise(password)}
    return steps <= {1} or steps <= {-1}


def check(username: str, password: str) -> None:
    """Raise WeakPassword with what to change when `password` breaks the policy."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password is too short: use at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"the password is too long: use at most {MAX_LENGTH} characters")
    lowered = password.lower()
    name = username.strip().lower()
    if name and (lowered == name or (name in lowered and len(name) * 2 >= len(lowered))):
        raise WeakPassword("the password must not be (or mostly be) the username")
    if lowered in _common() or _too_simple(password):
        raise WeakPassword("this password is too common or simple; choose a longer passphrase")
