"""Error types with a stable code, an HTTP status and a reason a person can act on.

No web framework here: the api maps `ZhikuError` to a JSON response, the workers record
`reason` on the document.
"""

from __future__ import annotations


class ZhikuError(Exception):
    code = "error"
    status = 400

    def __init__(self, reason: str, *, code: str | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadDocument(ZhikuError):
    """The file itself is unusable (corrupt, encrypted, empty, unsupported...). Never retried."""

    code = "bad_document"
    status = 422


class UnsupportedType(BadDocument):
    code = "unsupported_type"
    status = 415


class TooLarge(ZhikuError):
    code = "too_large"
    status = 413


class BadArchive(ZhikuError):
    code = "bad_archive"
    status = 422


class TransientFault(ZhikuError):
    """A fault worth retrying (a service briefly away, a lock held too long)."""

    code = "transient"
    status = 503


class NotFound(ZhikuError):
    code = "not_found"
    status = 404


class Forbidden(ZhikuError):
    code = "forbidden"
    status = 403


class Conflict(ZhikuError):
    code = "conflict"
    status = 409


class Unauthorized(ZhikuError):
    code = "unauthorized"
    status = 401


class RateLimited(ZhikuError):
    """Too many requests; `retry_after` is how many seconds to wait."""

    code = "rate_limited"
    status = 429

    def __init__(self, reason: str, *, retry_after: int, code: str | None = None):
        super().__init__(reason, code=code)
        self.retry_after = max(1, int(retry_after))
