"""Group commit of index publishes: when a library's index is published (pure decision)."""

from __future__ import annotations

import pytest

from core.repo.documents import IndexBacklog
from workers.indexing import publish_due


@pytest.mark.parametrize(
    ("ahead", "awaiting", "overdue", "max_docs", "due"),
    [
        (0, 0, 0, 200, False),  # nothing waits: someone published it already
        (5, 0, 0, 200, False),
        (0, 1, 0, 200, True),  # nothing ahead: publish now (one upload, the last of a batch)
        (0, 150, 0, 200, True),
        (3, 1, 0, 200, False),  # more on the way, few waiting, none waited long: later
        (3, 199, 0, 200, False),
        (3, 200, 0, 200, True),  # enough waiting
        (3, 350, 0, 200, True),
        (3, 10, 1, 200, True),  # the oldest waited the maximum delay
        (1000, 1, 1, 200, True),
        (3, 1, 0, 1, True),  # max_docs 1: a publish after every document, as before
        (3, 1, 0, 0, True),  # nonsense settings still publish rather than strand
    ],
)
def test_publish_due(ahead: int, awaiting: int, overdue: int, max_docs: int, due: bool) -> None:
    backlog = IndexBacklog(ahead=ahead, awaiting=awaiting, overdue=overdue)
    assert publish_due(backlog, max_docs) is due
