"""What of a growing answer may be shown yet, and in what form.

Tokens arrive a few characters at a time. Before any text leaves the server it must have its
personal data redacted and its citation markers checked, and both can straddle token
boundaries (`6222 0200 …` arrives in pieces, `[1` before `2]`). The gate holds back the tail
that could still turn into a marker or a piece of personal data and releases the rest:

- a trailing `[`, `［` or `【` followed only by digits and separators (an unfinished marker);
- a trailing run of characters that personal data is made of (digits, Latin letters, `@._+-`,
  and, after a digit, spaces and hyphens, as in grouped card numbers), at most `MAX_HOLD`
  characters — longer runs are no identifier we redact.

Released text has markers to no passage removed and personal data replaced by
`[REDACTED:kind]`. Each valid marker number is reported once, the first time it is released,
so a client can make it clickable as it appears.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from serving.pii import PiiMatch, redact_pii

MAX_HOLD = 48
_OPEN_MARKER = re.compile(r"[\[［【][0-9０-９\s,，、]{0,16}$")
# Full-width forms too: serving/pii.py folds them to ASCII before matching.
_RUN_CHARS = "0-9０-９A-Za-zＡ-Ｚａ-ｚ@＠._%+\\-．＿％＋－"
_TAIL_RUN = re.compile(rf"[0-9０-９+＋ \u3000\-－]*[{_RUN_CHARS}]*$")
_MARKER = re.compile(r"[\[［【]\s*([0-9０-９]{1,3}(?:\s*[,，、]\s*[0-9０-９]{1,3})*)\s*[\]］】]")


@dataclass
class Release:
    text: str
    new_markers: list[int] = field(default_factory=list)
    pii: list[PiiMatch] = field(default_factory=list)


class StreamGate:
    def __init__(self, passage_count: int) -> None:
        self.passage_count = passage_count
        self.released = ""
        self.pending = ""
        self.markers_seen: list[int] = []
        self.removed_markers: list[int] = []
        self.pii: list[PiiMatch] = []

    @property
    def text(self) -> str:
        """Everything seen so far (released and held back), for screening."""
        return self.released + self.pending

    def feed(self, piece: str) -> Release:
        self.pending += piece
        cut = len(self.pending) - self._hold(self.pending)
        return self._release(cut)

    def flush(self) -> Release:
        return self._release(len(self.pending))

    def _hold(self, text: str) -> int:
        window = text[-(MAX_HOLD + 20) :]
        m = _OPEN_MARKER.search(window)
        hold = len(window) - m.start() if m else 0
        run = _TAIL_RUN.search(window)
        if run is not None and run.end() - run.start() <= MAX_HOLD:
            hold = max(hold, run.end() - run.start())
        return hold

    def _release(self, cut: int) -> Release:
        if cut <= 0:
            return Release("")
        chunk, self.pending = self.pending[:cut], self.pending[cut:]
        chunk = _MARKER.sub(self._clean_marker, chunk)
        chunk, found = redact_pii(chunk)
        self.pii.extend(found)
        fresh: list[int] = []
        for n in (int(x) for x in re.findall(r"\[(\d+)\]", chunk)):
            if n not in self.markers_seen:
                self.markers_seen.append(n)
                fresh.append(n)
        self.released += chunk
        return Release(chunk, fresh, found)

    def _clean_marker(self, m: re.Match[str]) -> str:
        parts = re.split(r"\s*[,，、]\s*", m.group(1).strip())
        numbers = [int(unicodedata.normalize("NFKC", x)) for x in parts]
        valid: list[int] = []
        for n in numbers:
            if 1 <= n <= self.passage_count:
                if n not in valid:
                    valid.append(n)
            else:
                self.removed_markers.append(n)
        return "".join(f"[{n}]" for n in valid)
