"""Structure-aware chunking: parsed elements -> chunk drafts within a model-token budget.

Pure logic: no I/O, no `unstructured`, no model. The caller injects `count_tokens`, normally
the embedding model's tokenizer, so budgets are in the tokens the embedder really sees.

How a document becomes chunks:

* Sections. A ``Title`` element opens a section; the heading path is a stack of titles where
  a title of level *n* replaces every title at level >= *n* (a title without a level is a
  sibling of the deepest open title, or level 0 when none is open). A section that holds only
  its title is merged into the next section: its title becomes an extra first line there.
  A trailing title with nothing after it becomes a chunk of its own.
* Packing. The body elements of a section are packed greedily in order until the budget.
  Each element is measured sentence by sentence (English ``. ! ? ;`` followed by a space,
  Chinese ``。！？；…``, newlines); an element that fits the budget is kept whole (it moves to
  the next chunk rather than being cut), a longer one is cut at sentence boundaries, a
  sentence that alone is too long is cut at clause marks (``，、：`` or ``, :`` before a space),
  and a clause still too long into pieces of about ``overlap_tokens``, cut after a space or
  other soft break when one is near, else between characters.
* Titles. The first chunk of a section starts with its title line(s); later chunks of the same
  section repeat the section's title (and its untitled-body ancestors merged into it) when that
  costs at most a quarter of the budget, so each chunk reads on its own.
* Overlap. Consecutive chunks of one section share trailing sentences of at most
  ``overlap_tokens`` (a single last sentence may take up to twice that), never more than half
  the budget nor half of the previous chunk's new text.
  Nothing overlaps across sections or tables.
* Tables (``Table``/``TableChunk``) are never mixed with text: one chunk per table whose text is
  a context line (the heading path joined by " > ", dropped if it would take over a quarter of
  the budget) and the table text. A table over the budget is split by rows, each part
  repeating the header row (the table text's first line); a giant row is cut like text.
* Headers, footers, page numbers and page breaks are dropped; blank elements are skipped.
* Each chunk records ``spans`` (element index and [start, end) offsets into that element's
  original ``text``), the page range of its body elements (of its titles when the body has no
  pages), and ``token_count``: ``count_tokens`` of the final chunk text, always <= max_tokens
  (unless a single character exceeds it). Chunk text is ``normalize_text`` of those slices
  joined by newlines, so ``normalize_text(el.text[s.start:s.end]) in chunk.text`` always holds.
  A table's context line has no span.
* A chunk also holds at most 10 characters per token of budget, so text the tokenizer maps to
  a single [UNK] (a base64 blob, a long URL) cannot make a giant chunk.

Cost: every sentence is counted once and every chunk once more (the exact count; a sum of
parts is not trusted, since joins can add tokens), so about 2x the input's characters pass
through ``count_tokens``, in O(n) calls; giant sentences are cut without counting them whole.
The constant that ``count_tokens`` adds for special tokens (``count_tokens("")``, e.g. [CLS] and
[SEP]) is measured once and accounted for, so a counter may include them or not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.types import ChunkDraft, ElementSpan, ParsedElement

__all__ = [
    "SKIP_CATEGORIES",
    "TABLE_CATEGORIES",
    "TITLE_CATEGORY",
    "TokenCounter",
    "approx_token_counter",
    "chunk_elements",
    "normalize_text",
    "split_sentences",
]

TokenCounter = Callable[[str], int]

TITLE_CATEGORY = "Title"
TABLE_CATEGORIES = frozenset({"Table", "TableChunk"})
SKIP_CATEGORIES = frozenset(
    {"Header", "Footer", "PageHeader", "PageFooter", "PageNumber", "PageBreak"}
)

_MIN_CAPACITY = 8  # content tokens a chunk must be able to hold
# A chunk may not hold more characters than this many per token of budget, so that a run of
# characters the tokenizer maps to one [UNK] (a base64 blob, a long URL) cannot make a
# giant chunk.
_MAX_CHARS_PER_TOKEN = 10

# End of a sentence: English punctuation followed by whitespace, Chinese punctuation anywhere,
# or a newline. Closing quotes and brackets stay with their sentence.
_SENTENCE_END = re.compile(
    r"""[.!?;]+['"”’)\]]*(?=\s)"""
    r"""|[。！？；…]+['"”’」』）)\]]*"""
    r"""|\n"""
)
# A sentence too long for a chunk is first cut into clauses: after a Chinese comma/colon, or
# an English one followed by a space (not "1,000").
_CLAUSE_END = re.compile(r"[，、：]+|[,:](?=\s)")
# A clause still too long is cut near the target size, right after the last of these if any
# (the greedy ".*" makes `match` find the last one).
_LAST_SOFT_BREAK = re.compile("(?s:.*)[，、：,:）)」』”’ \t\u3000]")

_LINE_BREAKS = re.compile("\r\n?|[\f\v\u2028\u2029]")
_TRAILING_SPACE = re.compile(r"[ \t\u3000\u00a0]+(?=\n)")
_BLANK_RUNS = re.compile(r"\n{3,}")

_CJK = re.compile(
    "[\u2e80-\u2fff\u3001-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
    "\U00020000-\U0002fa1f]"
)
_WORD = re.compile(r"[^\W_]+")
_PUNCT = re.compile(r"[^\w\s]|_")


def approx_token_counter(text: str) -> int:
    """Rough model-token count without a tokenizer, for tests and scripts.

    CJK characters (and full-width punctuation) count 1 each, other words 1.3 each (rounded
    up), other punctuation 1 per character. It tends to over-count English slightly, which is
    the safe direction for a budget.
    """
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub(" ", text) if cjk else text
    words = len(_WORD.findall(rest))
    punct = len(_PUNCT.findall(rest))
    return cjk + math.ceil(words * 1.3) + punct


def normalize_text(text: str) -> str:
    """Light whitespace clean-up used for chunk text.

    Line breaks become ``\\n``, trailing spaces on lines are dropped, runs of blank lines
    collapse to one blank line and the ends are stripped. Spaces inside lines are kept.
    """
    text = _LINE_BREAKS.sub("\n", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """[start, end) shrunk to exclude surrounding whitespace, or None when only whitespace."""
    seg = text[start:end]
    left = seg.lstrip()
    if not left:
        return None
    s = start + len(seg) - len(left)
    return s, s + len(left.rstrip())


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans of ``text[start:end]`` as [start, end) offsets, whitespace trimmed.

    Together the spans cover every non-whitespace character of the range, in order.
    """
    return _split(_SENTENCE_END, text, start, len(text) if end is None else end)


def _split(pattern: re.Pattern[str], text: str, start: int, stop: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    pos = start
    for match in pattern.finditer(text, start, stop):
        span = _trimmed(text, pos, match.end())
        if span is not None:
            spans.append(span)
        pos = match.end()
    span = _trimmed(text, pos, stop)
    if span is not None:
        spans.append(span)
    return spans


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(slots=True)
class _Unit:
    """An atomic piece for packing: [start, end) of one element's text, already counted."""

    element: int
    start: int
    end: int
    cost: int  # what it takes from the budget: its tokens, or more for very long "words"
    header: bool = False  # a title line or a table header row, not body text
    first: bool = True  # starts its element (or table row)
    whole: int = 0  # cost of the whole element/row this unit starts (when `first`)


@dataclass
class _Section:
    header: list[int]  # title elements: merged title-only sections, then its own title
    body: list[int]  # text and table elements


class _Chunker:
    def __init__(
        self,
        elements: Sequence[ParsedElement],
        count_tokens: TokenCounter,
        max_tokens: int,
        overlap_tokens: int,
    ) -> None:
        if overlap_tokens < 0:
            raise ValueError("overlap_tokens must be >= 0")
        self.elements = elements
        self.texts = [el.text or "" for el in elements]
        self._count_raw = count_tokens
        self.max_tokens = max_tokens
        self.overhead = max(0, count_tokens(""))
        self.capacity = max_tokens - self.overhead
        if self.capacity < _MIN_CAPACITY:
            raise ValueError(
                f"max_tokens={max_tokens} leaves {self.capacity} tokens for text "
                f"(the counter adds {self.overhead}); need at least {_MIN_CAPACITY}"
            )
        self.overlap = min(overlap_tokens, self.capacity // 2)
        self.prefix_cap = self.capacity // 4  # most a repeated title/context may cost
        self.unit_limit = self.capacity - self.prefix_cap  # longer sentences are cut up
        self.piece_target = max(self.overlap, self.capacity // 8, 1)
        self.out: list[ChunkDraft] = []
        self._units: dict[int, list[_Unit]] = {}

    # -- counting ---------------------------------------------------------------------------

    def count(self, text: str) -> int:
        """Tokens of `text` without the counter's constant (special tokens)."""
        return max(0, self._count_raw(text) - self.overhead)

    @staticmethod
    def cost(tokens: int, chars: int) -> int:
        return max(tokens, -(-chars // _MAX_CHARS_PER_TOKEN))

    def _hard_split(self, text: str, unit: _Unit, target: int) -> list[_Unit]:
        """Cut one unit into pieces costing at most `target`, preferring clause marks/spaces.

        Each piece is counted; the cut position is guessed from the running characters-per-token
        ratio, so this costs about one count per piece.
        """
        target = max(1, target)
        start, end = unit.start, unit.end
        ratio = (end - start) / max(unit.cost, 1)
        pieces: list[_Unit] = []
        pos = start
        while pos < end:
            while pos < end and text[pos].isspace():
                pos += 1
            if pos >= end:
                break
            length = max(1, int(target * ratio * 0.9))
            while True:
                cut = end if pos + length >= end else self._snap(text, pos, pos + length)
                piece_end = pos + len(text[pos:cut].rstrip())
                n = self.count(text[pos:piece_end])
                c = self.cost(n, piece_end - pos)
                if c <= target or cut - pos <= 1:
                    break
                length = max(1, min(cut - pos - 1, int((cut - pos) * target / c * 0.9)))
            if c > 0:
                ratio = (piece_end - pos) / c
            pieces.append(_Unit(unit.element, pos, piece_end, c, unit.header, first=False))
            pos = cut
        if not pieces:
            return [unit]
        pieces[0].first = unit.first
        pieces[0].whole = unit.whole
        return pieces

    @staticmethod
    def _snap(text: str, pos: int, cut: int) -> int:
        """Move `cut` back to just after a soft break in the second half of [pos, cut)."""
        match = _LAST_SOFT_BREAK.match(text, pos + (cut - pos) // 2, cut)
        return match.end() if match else cut

    def _unit(self, idx: int, start: int, end: int, *, count: bool) -> _Unit:
        """A unit for [start, end) of an element, counted or (when not `count`) costed by size."""
        n = self.count(self.texts[idx][start:end]) if count else 0
        return _Unit(idx, start, end, self.cost(n, end - start), first=False)

    # -- units --------------------------------------------------------------------------------

    def units_of(self, idx: int, *, header: bool = False) -> list[_Unit]:
        """Sentence units of a text element (cached), long sentences already cut."""
        cached = self._units.get(idx)
        if cached is None:
            text = self.texts[idx]
            cached = []
            for s, e in split_sentences(text):
                # A sentence certainly too long (by its length) is not counted as a whole.
                unit = self._unit(idx, s, e, count=self.cost(0, e - s) <= self.unit_limit)
                if unit.cost <= self.unit_limit:
                    cached.append(unit)
                    continue
                for cs, ce in _split(_CLAUSE_END, text, s, e):
                    clause = self._unit(idx, cs, ce, count=self.cost(0, ce - cs) <= self.unit_limit)
                    if clause.cost <= self.unit_limit:
                        cached.append(clause)
                    else:
                        cached.extend(self._hard_split(text, clause, self.piece_target))
            if cached:
                cached[0].first = True
                cached[0].whole = sum(u.cost for u in cached)
            self._units[idx] = cached
        return [_Unit(u.element, u.start, u.end, u.cost, header, u.first, u.whole) for u in cached]

    # -- rendering and emitting ---------------------------------------------------------------

    def _render(
        self, lines: Sequence[str], units: Sequence[_Unit]
    ) -> tuple[str, list[ElementSpan]]:
        segments: list[list[int]] = []
        for u in units:
            last = segments[-1] if segments else None
            if (
                last is not None
                and last[0] == u.element
                and u.start >= last[2]
                and not self.texts[u.element][last[2] : u.start].strip()
            ):
                last[2] = u.end
            else:
                segments.append([u.element, u.start, u.end])
        parts = [line for line in lines if line]
        parts.extend(normalize_text(self.texts[e][s:t]) for e, s, t in segments)
        text = "\n".join(p for p in parts if p)
        return text, [ElementSpan(e, s, t) for e, s, t in segments]

    def _emit(
        self,
        text: str,
        spans: list[ElementSpan],
        units: Sequence[_Unit],
        token_count: int,
        path: list[str],
        kind: str,
    ) -> None:
        # Pages of the body; those of repeated titles only when the body has none.
        body = [self.elements[u.element].page for u in units if not u.header]
        pages = [p for p in body if p is not None]
        if not pages:
            pages = [p for p in (self.elements[u.element].page for u in units) if p is not None]
        self.out.append(
            ChunkDraft(
                ordinal=len(self.out),
                text=text,
                token_count=token_count,
                heading_path=list(path),
                page_start=min(pages) if pages else None,
                page_end=max(pages) if pages else None,
                spans=spans,
                kind=kind,
            )
        )

    # -- packing ------------------------------------------------------------------------------

    def pack(
        self,
        units: list[_Unit],
        path: list[str],
        kind: str,
        *,
        lines: Sequence[str] = (),
        prefix: Sequence[_Unit] = (),
        prefix_on_first: bool = True,
        overlap: bool = True,
    ) -> None:
        """Greedily pack `units` into chunks, each starting with `lines` and (maybe) `prefix`."""
        lines_text = "\n".join(lines)
        lines_cost = self.cost(self.count(lines_text), len(lines_text)) if lines else 0
        prefix_cost = sum(u.cost for u in prefix)
        carry: list[_Unit] = []
        first = True
        i = 0
        while i < len(units):
            use_prefix = bool(prefix) and (prefix_on_first or not first)
            pre = list(prefix) if use_prefix else []
            budget = self.capacity - lines_cost - (prefix_cost if use_prefix else 0)
            head = units[i]
            need = head.whole if head.first and head.whole <= budget else head.cost
            carry_cost = sum(u.cost for u in carry)
            while carry and carry_cost + need > budget:
                carry_cost -= carry.pop(0).cost
            if head.cost > budget:
                pieces = self._hard_split(
                    self.texts[head.element], head, min(self.piece_target, budget)
                )
                if len(pieces) > 1:
                    units[i : i + 1] = pieces
                    continue
                # It cannot be cut any further (one character): it goes alone, over budget.

            cur = list(carry)
            cur_cost = carry_cost
            has_body = False
            j = i
            while j < len(units):
                u = units[j]
                if cur_cost + u.cost > budget and j > i:
                    room = budget - cur_cost
                    if not has_body and not u.header and room > 0 and u.end - u.start > 1:
                        # Only titles so far: fill the chunk with the start of this unit
                        # rather than leaving a title alone.
                        units[j : j + 1] = self._hard_split(
                            self.texts[u.element], u, min(self.piece_target, room)
                        )
                        if units[j].cost <= room:
                            continue
                    break
                if u.first and has_body and u.whole <= budget and cur_cost + u.whole > budget:
                    break  # the element fits a chunk of its own: don't cut it
                cur.append(u)
                cur_cost += u.cost
                has_body = has_body or not u.header
                j += 1

            # Measure the chunk; shrink it in the rare case the parts under-estimated it.
            while True:
                text, spans = self._render(lines, pre + cur)
                total = self._count_raw(text)
                excess = max(
                    total - self.max_tokens,
                    self.cost(0, len(text)) - self.capacity,
                )
                if excess <= 0:
                    break
                if len(cur) - len(carry) > 1:
                    cur.pop()
                    j -= 1
                elif carry:
                    carry.pop(0)
                    cur.pop(0)
                else:
                    break
            if excess > 0 and len(cur) == 1:
                only = cur[0]
                if only.end - only.start > 1 and only.cost > 1:
                    pieces = self._hard_split(
                        self.texts[only.element], only, max(1, only.cost - excess - 1)
                    )
                    if len(pieces) > 1:
                        units[i : i + 1] = pieces
                        continue  # retry this chunk with the smaller first piece
            self._emit(text, spans, pre + cur, total, path, kind)
            first = False

            new = cur[len(carry) :]
            carry = []
            if overlap and self.overlap and j < len(units):
                # Trailing sentences up to `overlap`; a single last sentence may be up to twice
                # that (Chinese sentences are long), never over half the budget or half of
                # what this chunk added.
                cap = min(budget // 2, sum(u.cost for u in new) // 2)
                acc = 0
                for u in reversed(new):
                    limit = min(cap, self.overlap if carry else 2 * self.overlap)
                    if u.header or acc + u.cost > limit:
                        break
                    carry.insert(0, u)
                    acc += u.cost
            i = j

    # -- tables -------------------------------------------------------------------------------

    def table(self, idx: int, path: list[str], extra_lines: list[str]) -> bool:
        """Emit the chunk(s) of one table; tell whether they carry the context line."""
        text = self.texts[idx]
        whole = _trimmed(text, 0, len(text))
        if whole is None:
            return False
        context = " > ".join(path)
        lines = [*extra_lines, context] if context else list(extra_lines)
        lines_text = "\n".join(lines)
        if self.cost(self.count(lines_text), len(lines_text)) > self.prefix_cap:
            lines = []
        # Cheap path: the whole table fits.
        unit = _Unit(idx, whole[0], whole[1], 0)
        body, spans = self._render(lines, [unit])
        total = self._count_raw(body)
        if total <= self.max_tokens and self.cost(0, len(body)) <= self.capacity:
            self._emit(body, spans, [unit], total, path, "table")
            return bool(lines)
        rows: list[_Unit] = []
        for match in re.finditer(r"[^\n]+", text):
            span = _trimmed(text, match.start(), match.end())
            if span is None:
                continue
            n = self.count(text[span[0] : span[1]])
            c = self.cost(n, span[1] - span[0])
            rows.append(_Unit(idx, span[0], span[1], c, whole=c))
        header, rows = rows[:1], rows[1:]
        if not rows:  # a single giant line: cut it like text
            rows, header = header, []
        elif header[0].cost > self.capacity // 2:
            rows, header = header + rows, []  # too big to repeat: it stays in part one
        else:
            header[0].header = True
            if self.cost(self.count(lines_text), len(lines_text)) + header[0].cost > (
                self.capacity // 2
            ):
                lines = []
        self.pack(rows, path, "table", lines=lines, prefix=header, overlap=False)
        return bool(lines)

    # -- sections -----------------------------------------------------------------------------

    def run(self) -> list[ChunkDraft]:
        stack: list[tuple[int, str, int]] = []  # (level, title, element index)
        section = _Section([], [])
        for idx, el in enumerate(self.elements):
            if el.category in SKIP_CATEGORIES or not self.texts[idx].strip():
                continue
            if el.category == TITLE_CATEGORY:
                if section.body:
                    self.section(section, stack)
                    section = _Section([], [])
                level = el.level if el.level is not None else (stack[-1][0] if stack else 0)
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, _one_line(self.texts[idx]), idx))
                section.header.append(idx)
            else:
                section.body.append(idx)
        if section.header or section.body:
            self.section(section, stack)
        return self.out

    def section(self, section: _Section, stack: list[tuple[int, str, int]]) -> None:
        path = [title for _, title, _ in stack]
        in_path = {idx for _, _, idx in stack}
        header_units = [u for idx in section.header for u in self.units_of(idx, header=True)]
        # What continuation chunks repeat: the titles of this section that are in its path.
        repeat = [
            u for idx in section.header if idx in in_path for u in self.units_of(idx, header=True)
        ]
        if sum(u.cost for u in repeat) > self.prefix_cap and section.header:
            repeat = self.units_of(section.header[-1], header=True)
        if sum(u.cost for u in repeat) > self.prefix_cap:
            repeat = []

        if not section.body:
            self.pack(header_units, path, "text")
            return
        header_shown = False
        run: list[int] = []

        def flush_text() -> None:
            nonlocal header_shown
            if not run:
                return
            units = [u for idx in run for u in self.units_of(idx)]
            if header_shown:
                self.pack(units, path, "text", prefix=repeat)
            else:
                self.pack(header_units + units, path, "text", prefix=repeat, prefix_on_first=False)
                header_shown = True
            run.clear()

        for idx in section.body:
            if self.elements[idx].category in TABLE_CATEGORIES:
                flush_text()
                extra = []
                if not header_shown:
                    extra = [_one_line(self.texts[i]) for i in section.header if i not in in_path]
                # The context line shows the titles, unless it was too long to keep.
                header_shown = self.table(idx, path, extra) or header_shown
            else:
                run.append(idx)
        flush_text()
        if not header_shown:  # only tables, none could show the titles: keep them anyway
            self.pack(header_units, path, "text")


def chunk_elements(
    elements: Sequence[ParsedElement],
    count_tokens: TokenCounter,
    max_tokens: int = 256,
    overlap_tokens: int = 32,
) -> list[ChunkDraft]:
    """Split parsed elements into chunk drafts of at most `max_tokens` tokens each.

    `count_tokens` must count what the embedder will see (its own tokenizer; with or without
    special tokens, the constant is measured via ``count_tokens("")``). `overlap_tokens` is the
    most trailing text two consecutive chunks of one section share (capped at half the budget).
    Raises ValueError when the budget is too small to hold text. See the module docstring.
    """
    if not elements:
        return []
    return _Chunker(elements, count_tokens, max_tokens, overlap_tokens).run()
